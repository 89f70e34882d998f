"""What the sandbox remembers: shipments, callbacks sent, WhatsApp messages, tokens, faults.

All of it lives in memory and is lost on restart (or on ``POST /sandbox/reset``): the sandbox is a
stand-in for partners in development and tests, where a fresh world per run is what one wants.
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

FaultMode = Literal["ok", "error", "timeout", "refuse"]
FaultTarget = Literal["jnt", "pos", "whatsapp"]
# What can happen to a shipment. The sandbox keeps its own copy of the partners' vocabulary and
# wire formats instead of importing the adapters', so a mistake in an adapter is caught by the
# sandbox rather than mirrored by it.
FactKind = Literal[
    "picked_up", "in_transit", "cod_collected", "delivered", "delivery_failed", "returned"
]


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


@dataclass
class CallbackRecord:
    """One callback the sandbox sent (or is still trying to send) to the courier service."""

    event_id: str
    kind: str
    occurred_at: datetime
    source: Literal["autoplay", "manual", "script"]
    cod_amount: int | None = None
    applies: bool = True  # False: forged or stale, the partner never reported this fact
    attempts: int = 0
    delivered: bool = False
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    # epoch seconds: when the first attempt was sent; with ``delivered_at`` (the 2xx) it tells the
    # partner's own time before each fact apart from ours (bench/stats.py)
    first_sent_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "occurred_at": rfc3339(self.occurred_at),
            "source": self.source,
            "cod_amount": self.cod_amount,
            "applies": self.applies,
            "attempts": self.attempts,
            "delivered": self.delivered,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "delivered_at": rfc3339(self.delivered_at),
            "first_sent_at_epoch": self.first_sent_at,
        }


@dataclass
class ScriptProgress:
    """How far a scripted life has got (``sandbox/scripts.py``)."""

    name: str | None
    steps: int
    played: int = 0
    finished: bool = False
    # what the courier service answered to the sends that are not retried (forged, duplicates)
    answers: list[int | None] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "played": self.played,
                "finished": self.finished, "answers": self.answers}


@dataclass
class Shipment:
    partner: str
    waybill: str
    order_ref: str
    cod_amount: int
    recipient_name: str
    booked_at: datetime
    booking: dict[str, Any]  # what the partner received, as received
    status: str = "booked"  # booked | cancelled | then the kind of the latest fact played
    callbacks: list[CallbackRecord] = field(default_factory=list)
    script: ScriptProgress | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "partner": self.partner,
            "waybill": self.waybill,
            "order_ref": self.order_ref,
            "status": self.status,
            "cod_amount": self.cod_amount,
            "booked_at": rfc3339(self.booked_at),
            "callbacks_sent": len(self.callbacks),
            "callbacks_delivered": sum(c.delivered for c in self.callbacks),
            "script": self.script.to_json() if self.script else None,
        }

    def to_json(self) -> dict[str, Any]:
        return self.summary() | {
            "booking": self.booking,
            "callbacks": [c.to_json() for c in self.callbacks],
        }

    def timings(self) -> dict[str, Any]:
        """When the booking arrived and each callback was first sent and taken (epoch seconds)."""
        return {
            "order_ref": self.order_ref,
            "booked_at_epoch": self.booked_at.timestamp(),
            "callbacks": [
                [c.kind, c.first_sent_at, c.delivered_at.timestamp() if c.delivered_at else None]
                for c in self.callbacks
            ],
        }


@dataclass
class Fault:
    mode: FaultMode = "ok"
    until: float | None = None  # time.monotonic(); None = until told otherwise

    def active(self, now: float) -> FaultMode:
        if self.mode == "ok" or (self.until is not None and now >= self.until):
            return "ok"
        return self.mode


def _received_at_epoch(message: dict[str, Any]) -> float:
    epoch: float = message["received_at_epoch"]
    return epoch


@dataclass
class State:
    seed: int | None = None
    shipments: dict[str, Shipment] = field(default_factory=dict)  # by waybill
    # (partner, order ref) -> waybill: the dedupe that makes booking retries safe
    orders: dict[tuple[str, str], str] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)  # WhatsApp, in arrival order
    # the same messages by recipient (wa_id): a poll for one phone does not scan everyone's
    messages_to: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # whether ``messages`` is in ``received_at_epoch`` order too (the wall clock never stepped
    # back), so a poll "since t" finds its first message by bisection instead of a scan
    messages_in_time_order: bool = True
    pos_tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry
    faults: dict[str, Fault] = field(default_factory=dict)
    # order ref -> (scenario name, steps): lives to play instead of autoplay when booked
    scripts: dict[str, tuple[str | None, list[Any]]] = field(default_factory=dict)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def add_message(self, message: dict[str, Any]) -> None:
        if self.messages and message["received_at_epoch"] < self.messages[-1]["received_at_epoch"]:
            self.messages_in_time_order = False
        self.messages.append(message)
        self.messages_to.setdefault(message["wa_id"], []).append(message)

    def find_messages(self, wa_id: str | None, since: float | None) -> list[dict[str, Any]]:
        """Messages (in arrival order) to ``wa_id`` (None: anyone) received at ``since`` or later
        (unix seconds; None: ever)."""
        found = self.messages if wa_id is None else self.messages_to.get(wa_id, [])
        if since is None:
            return list(found)
        if wa_id is None and self.messages_in_time_order and not math.isnan(since):
            return found[bisect_left(found, since, key=_received_at_epoch) :]
        return [m for m in found if m["received_at_epoch"] >= since]

    def new_waybill(self, prefix: str, digits: int) -> str:
        while True:
            waybill = prefix + "".join(self.rng.choices("0123456789", k=digits))
            if waybill not in self.shipments:
                return waybill

    def token(self, nbytes: int = 16) -> str:
        return self.rng.randbytes(nbytes).hex()

    def fault(self, target: str) -> FaultMode:
        current = self.faults.get(target)
        return current.active(time.monotonic()) if current else "ok"

    def set_fault(self, target: str, mode: FaultMode, seconds: float | None) -> None:
        until = time.monotonic() + seconds if seconds and mode != "ok" else None
        self.faults[target] = Fault(mode, until)
