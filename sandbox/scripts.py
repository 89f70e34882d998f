"""Scripted lives: what a shipment goes through, step by step, instead of the default autoplay.

A script is registered for an order ref (our request id) before the booking arrives, or played on
a shipment already booked. Each step is one fact the partner reports with a callback, in the order
listed; ``occurred_offset_s`` (or ``occurred_at``) sets when the fact happened, so callbacks can
arrive out of order (a delivery scan before the pick-up scan it follows). A step can also be sent
twice (``duplicate``: the same event id again), forged (``bad_signature``) or replayed late
(``stale_timestamp``): a forged or stale callback is sent once and does not change the shipment.

Named scenarios cover the cases the courier service must handle; ``GET /sandbox/scenarios``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, StrictInt, model_validator

from sandbox.state import FactKind


class Step(BaseModel):
    kind: FactKind
    cod_amount: StrictInt | None = None  # default: the booked COD value, on cod_collected
    reason: str | None = None  # on delivery_failed / returned (default: recipient not home)
    received_by: str | None = None  # default: the recipient, on delivered
    documents_collected: bool | None = None  # default: true, on delivered
    occurred_at: datetime | None = None  # when the fact happened (default: now)
    occurred_offset_s: float | None = None  # or relative to now (negative: in the past)
    delay_ms: int | None = Field(default=None, ge=0)  # wait before this step (default: config)
    duplicate: bool = False  # once accepted, send the same callback (same event id) again
    bad_signature: bool = False
    stale_timestamp: bool = False

    @model_validator(mode="after")
    def _one_time(self) -> Step:
        if self.occurred_at is not None and self.occurred_offset_s is not None:
            raise ValueError("give occurred_at or occurred_offset_s, not both")
        if self.occurred_at is not None and self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at needs a UTC offset")
        return self

    @property
    def forged(self) -> bool:
        return self.bad_signature or self.stale_timestamp


def _steps(*items: dict[str, Any]) -> list[Step]:
    return [Step.model_validate(item) for item in items]


PICKUP = {"kind": "picked_up"}
COD = {"kind": "cod_collected"}
DELIVERED = {"kind": "delivered"}
FAILED = {"kind": "delivery_failed", "reason": "Penerima tidak di tempat"}

SCENARIOS: dict[str, list[Step]] = {
    "cod_then_delivered": _steps(PICKUP, COD, DELIVERED),
    "delivered_then_cod": _steps(PICKUP, DELIVERED, COD),
    "failed_then_delivered": _steps(
        PICKUP, FAILED, {"kind": "delivery_failed", "reason": "Alamat tidak ditemukan"},
        {"kind": "in_transit"}, DELIVERED, COD,
    ),
    "failed_then_returned": _steps(
        PICKUP, FAILED, {"kind": "returned", "reason": "Penerima menolak / tidak dapat dihubungi"},
    ),
    "wrong_cod_amount": _steps(PICKUP, {"kind": "cod_collected", "cod_amount": 25_000}, DELIVERED),
    "no_cod": _steps(PICKUP, DELIVERED),
    "documents_not_collected": _steps(PICKUP, COD, {"kind": "delivered",
                                                    "documents_collected": False}),
    "duplicate_callbacks": _steps(
        {"kind": "picked_up", "duplicate": True}, {"kind": "cod_collected", "duplicate": True},
        {"kind": "delivered", "duplicate": True},
    ),
    "out_of_order": _steps(
        {"kind": "delivered", "occurred_offset_s": -60},
        {"kind": "cod_collected", "occurred_offset_s": -90},
        {"kind": "picked_up", "occurred_offset_s": -3600},
    ),
    "late_failure_after_delivery": _steps(PICKUP, COD, DELIVERED, FAILED),
    "forged_and_stale": _steps(
        PICKUP, {"kind": "delivered", "bad_signature": True},
        {"kind": "delivered", "stale_timestamp": True}, COD, DELIVERED,
    ),
}
