"""The one interface every courier partner adapter implements, and the values it speaks in.

Adapters are thin translators between these values and a partner's wire format. They never retry:
the courier service retries from its database with backoff, so a crash loses no attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal, Protocol

# A callback bigger than this is not a tracking update; refuse it before parsing.
MAX_WEBHOOK_BODY_BYTES = 64 * 1024
WEBHOOK_TOLERANCE_S = 300

EventKind = Literal[
    "picked_up", "in_transit", "cod_collected", "delivered", "delivery_failed", "returned"
]


@dataclass(frozen=True)
class Address:
    street: str
    rt_rw: str
    kelurahan: str
    kecamatan: str
    kabupaten_kota: str
    provinsi: str
    postal_code: str


@dataclass(frozen=True)
class Sender:
    """Where the courier picks up: the Dukcapil office. Configuration, not per booking."""

    name: str
    phone: str
    address: Address


@dataclass(frozen=True)
class BookingRequest:
    # Our idempotency reference (the request id); partners dedupe on it, so a retried booking
    # never creates a second shipment.
    order_ref: str
    cod_amount: int  # rupiah; only the shipping fee may ever be collected (UU 24/2013 Pasal 79A)
    recipient_name: str
    recipient_phone: str  # +62...
    address: Address
    item_description: str  # e.g. "Dokumen kependudukan: KTP-el"

    def __post_init__(self) -> None:
        # bool is an int subclass; True rupiah is a bug, not an amount.
        if isinstance(self.cod_amount, bool) or not isinstance(self.cod_amount, int):
            raise TypeError("cod_amount must be an int number of rupiah")
        if self.cod_amount <= 0:
            raise ValueError("cod_amount must be positive")
        if not self.order_ref:
            raise ValueError("order_ref is required: partners dedupe bookings on it")


@dataclass(frozen=True)
class Booking:
    partner: str
    waybill: str
    order_ref: str


class PartnerError(Exception):
    """A partner call failed.

    ``transient``: timeout, connection error, 429 or 5xx: the same call may succeed later.
    Otherwise the partner refused on business grounds (4xx, refusal code) and a retry will not help.
    """

    def __init__(self, partner: str, transient: bool, reason: str) -> None:
        super().__init__(f"{partner}: {reason} ({'transient' if transient else 'permanent'})")
        self.partner = partner
        self.transient = transient
        self.reason = reason


class WebhookRejected(Exception):
    """A partner callback that must not be accepted; ``status_code`` is the HTTP answer to send."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(f"{status_code}: {reason}")
        self.status_code = status_code
        self.reason = reason


@dataclass(frozen=True)
class PartnerEvent:
    """One fact parsed from a partner callback."""

    partner: str
    partner_event_id: str  # the partner's own id, prefixed with the partner: the dedupe key
    waybill: str
    kind: EventKind
    occurred_at: datetime  # aware, UTC
    cod_amount: int | None = None  # rupiah, on cod_collected
    received_by: str | None = None  # on delivered
    documents_collected: bool | None = None  # requirement documents taken at the door
    reason: str | None = None  # on delivery_failed / returned


@dataclass(frozen=True)
class SettlementFormat:
    """The columns of a partner's COD settlement file (CSV) that reconciliation reads.

    No partner publishes its format; these are mappings, changed with the contract, not code.
    ``time_format`` None means RFC 3339; ``timezone`` is for times written without an offset.
    """

    waybill: str
    amount: str
    paid_at: str | None = None
    time_format: str | None = None
    timezone: tzinfo | None = None


class CourierPartner(Protocol):
    name: str
    settlement_format: SettlementFormat

    async def book(self, request: BookingRequest) -> Booking: ...

    async def cancel(self, waybill: str) -> None: ...

    def parse_webhook(
        self, headers: Mapping[str, str], raw_body: bytes, now: float
    ) -> list[PartnerEvent]:
        """Verify signature and timestamp window on the RAW body; raise WebhookRejected."""
        ...


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts and Starlette's Headers."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


def check_body_size(raw_body: bytes) -> None:
    if len(raw_body) > MAX_WEBHOOK_BODY_BYTES:
        raise WebhookRejected(413, f"body larger than {MAX_WEBHOOK_BODY_BYTES} bytes")
