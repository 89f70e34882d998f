"""The courier's rules. No I/O here.

The shipment's state machine: booked -> handed to courier -> COD paid and delivered, in either
order -> completed. A failed attempt (delivery_failed) may be followed by a redelivery or a return to
the office. Callbacks come late, twice and out of order: a fact that implies an earlier one
(delivered without a pickup scan) emits the earlier one first; a fact that no longer fits (a failure
after delivery) is recorded as an anomaly, never crashed on.

Also here: the breaker that pauses bookings for a partner that is down, the service-level promise,
and what happens to the originals (requirement documents) collected at the door.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from shared.contracts import topics


@dataclass(frozen=True)
class ShipmentState:
    handed: bool = False
    cod_paid: bool = False
    delivered: bool = False
    returned: bool = False
    failed_attempts: int = 0

    @property
    def status(self) -> str:
        if self.returned:
            return "returned_to_office"
        if self.delivered and self.cod_paid:
            return "completed"
        if self.delivered:
            return "delivered"
        if self.cod_paid:
            return "cod_paid"
        if self.failed_attempts:
            return "delivery_failed"
        if self.handed:
            return "handed_to_courier"
        return "booked"


@dataclass(frozen=True)
class Decision:
    state: ShipmentState
    emit: list[str] = field(default_factory=list)  # topics of the events to publish, in order
    anomaly: str | None = None


def apply_partner_event(state: ShipmentState, kind: str) -> Decision:
    emit: list[str] = []
    if kind in ("picked_up", "in_transit"):
        if state.handed:
            return Decision(state)
        if state.delivered or state.returned:
            return Decision(state, anomaly=f"{kind} after the shipment ended")
        return Decision(replace(state, handed=True), [topics.HANDED_TO_COURIER])

    if kind in ("cod_collected", "delivered", "delivery_failed") and state.returned:
        return Decision(state, anomaly=f"{kind} after the shipment was returned to the office")

    anomaly = None
    if kind in ("cod_collected", "delivered", "delivery_failed", "returned") and not state.handed:
        # the pickup scan is late or lost: the later fact proves the courier has the parcel
        state = replace(state, handed=True)
        emit.append(topics.HANDED_TO_COURIER)
        anomaly = f"{kind} before any pickup scan"

    if kind == "cod_collected":
        if state.cod_paid:
            # another collection record (a new partner event id): money is never silently merged
            return Decision(state, emit, anomaly or "COD reported again after it was collected")
        return Decision(replace(state, cod_paid=True), [*emit, topics.COD_PAID], anomaly)
    if kind == "delivered":
        if state.delivered:
            return Decision(state, emit, anomaly)
        return Decision(replace(state, delivered=True), [*emit, topics.DELIVERED], anomaly)
    if kind == "delivery_failed":
        if state.delivered:
            return Decision(state, emit, "delivery failure reported after delivery")
        new = replace(state, failed_attempts=state.failed_attempts + 1)
        return Decision(new, [*emit, topics.DELIVERY_FAILED], anomaly)
    if kind == "returned":
        if state.delivered:
            return Decision(state, emit, "return reported after delivery")
        if state.returned:
            return Decision(state, emit, anomaly)
        if state.cod_paid:
            # money collected yet the parcel came back: applied, and flagged for the COD report
            anomaly = "returned although COD was reported collected"
        return Decision(replace(state, returned=True), [*emit, topics.RETURNED_TO_OFFICE], anomaly)
    return Decision(state, anomaly=f"unknown partner event kind {kind!r}")


def booking_backoff(attempts: int, start_s: float, cap_s: float) -> float:
    """Seconds to wait after ``attempts`` failed bookings."""
    return float(min(cap_s, start_s * 2 ** max(0, attempts - 1)))


def cod_mismatch(expected: int, collected: int | None) -> str | None:
    """COD may only carry the shipping fee; a different amount is a fact to flag, never hide."""
    if collected is None or collected == expected:
        return None
    return f"COD collected Rp {collected} differs from the fee Rp {expected}"


# --- a partner that is down ----------------------------------------------------------------------

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class PartnerBreaker:
    """Pauses bookings for a partner that is down, so it is not hammered and no worker waits on it.

    After ``threshold`` transient failures in a row the breaker opens: that partner's bookings wait
    (still ``to_book``, none lost) and one probe booking goes at intervals doubling from
    ``probe_start_s`` to ``probe_cap_s``. The first success closes it; the caller then releases the
    waiting backlog at once. Times are ``time.monotonic()`` seconds.
    """

    threshold: int = 3
    probe_start_s: float = 1.0
    probe_cap_s: float = 15.0
    failures: int = 0
    last_error: str | None = None
    opened_at: float | None = None
    next_probe_at: float | None = None
    probe_interval_s: float = 0.0

    def state(self, now: float) -> BreakerState:
        if self.next_probe_at is None:
            return "closed"
        return "half_open" if now >= self.next_probe_at else "open"

    def capacity(self, now: float, concurrency: int) -> int:
        """How many bookings may go to the partner now."""
        return {"closed": concurrency, "half_open": 1, "open": 0}[self.state(now)]

    def seconds_to_probe(self, now: float) -> float:
        return 0.0 if self.next_probe_at is None else max(0.0, self.next_probe_at - now)

    def record_success(self) -> bool:
        """True when this success ends an outage."""
        recovered = self.next_probe_at is not None
        self.failures, self.opened_at, self.next_probe_at = 0, None, None
        return recovered

    def record_failure(self, now: float, reason: str, probe: bool) -> None:
        self.last_error = reason
        if self.next_probe_at is None:
            self.failures += 1
            if self.failures >= self.threshold:
                self.opened_at = now
                self.probe_interval_s = self.probe_start_s
                self.next_probe_at = now + self.probe_interval_s
        elif probe:
            self.failures += 1
            self.probe_interval_s = min(self.probe_cap_s, self.probe_interval_s * 2)
            self.next_probe_at = now + self.probe_interval_s
        # a failure from a batch sent before the breaker opened changes nothing more


def booking_given_up(to_book_since: datetime, now: datetime, give_up_after: timedelta) -> bool:
    """Transient failures are retried until ``give_up_after``; then the booking waits for ops."""
    return now - to_book_since >= give_up_after


# --- service levels ------------------------------------------------------------------------------

SlaState = Literal["on_track", "at_risk", "late", "on_time", "delivered_late", "returned"]


@dataclass(frozen=True)
class Promise:
    """Delivery is promised 2-4 days after the "ready" message (document-printed)."""

    min_days: float = 2.0
    max_days: float = 4.0


@dataclass(frozen=True)
class ServiceLevel:
    state: SlaState
    due_at: datetime
    ready_to_handed_s: float | None
    handed_to_delivered_s: float | None
    ready_to_delivered_s: float | None
    late_by_s: float | None  # past the promise: how far

    @property
    def late(self) -> bool:
        return self.state in ("late", "delivered_late")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    # partners report to the second (J&T): a handover in the second of printing measures 0, not -0.5
    return max(0.0, (end - start).total_seconds()) if start and end else None


def service_level(
    ready_at: datetime,
    handed_at: datetime | None,
    delivered_at: datetime | None,
    returned: bool,
    now: datetime,
    promise: Promise,
) -> ServiceLevel:
    due = ready_at + timedelta(days=promise.max_days)
    state: SlaState
    if delivered_at is not None:
        state = "on_time" if delivered_at <= due else "delivered_late"
        late_by = _seconds(due, delivered_at) if state == "delivered_late" else None
    elif returned:
        state, late_by = "returned", None
    elif now > due:
        state, late_by = "late", _seconds(due, now)
    elif now > ready_at + timedelta(days=promise.min_days):
        state, late_by = "at_risk", None
    else:
        state, late_by = "on_track", None
    return ServiceLevel(
        state=state,
        due_at=due,
        ready_to_handed_s=_seconds(ready_at, handed_at),
        handed_to_delivered_s=_seconds(handed_at, delivered_at),
        ready_to_delivered_s=_seconds(ready_at, delivered_at),
        late_by_s=late_by,
    )


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when there are none."""
    if not values:
        return None
    ranked = sorted(values)
    rank = max(1, -(-len(ranked) * q // 100))  # ceil(n * q / 100), at least 1
    return ranked[int(rank) - 1]


# --- originals (requirement documents collected at the door) -------------------------------------

OriginalsStatus = Literal[
    "awaiting_delivery",  # not delivered yet
    "with_courier",  # collected at the door, travelling back to the office
    "unconfirmed",  # delivered, the partner did not say whether they were collected
    "not_collected",  # delivered, the courier says they were not collected
    "received",  # the office confirmed it has them all
    "received_incomplete",  # the office received some, not all
    "none",  # nothing to collect: the shipment came back or was cancelled
]
# Still owed to the office: overdue once past their due date.
ORIGINALS_OUTSTANDING: frozenset[str] = frozenset({"with_courier", "unconfirmed"})
# Needing a person: overdue, not collected, or received with something missing.
ORIGINALS_ATTENTION: frozenset[str] = frozenset({"not_collected", "received_incomplete"})


def originals_after_delivery(documents_collected: bool | None) -> OriginalsStatus:
    if documents_collected is None:
        return "unconfirmed"
    return "with_courier" if documents_collected else "not_collected"


def originals_overdue(status: str, due_at: datetime | None, now: datetime) -> bool:
    return status in ORIGINALS_OUTSTANDING and due_at is not None and now > due_at


def originals_after_receipt(missing: list[str]) -> OriginalsStatus:
    return "received_incomplete" if missing else "received"


# --- office days ---------------------------------------------------------------------------------


def office_timezone(utc_offset_hours: float) -> timezone:
    """Indonesia has no daylight saving: WIB +7, WITA +8, WIT +9."""
    return timezone(timedelta(hours=utc_offset_hours))


def day_bounds(day: date, tz: timezone) -> tuple[datetime, datetime]:
    """The office day ``day`` as [start, end) instants."""
    start = datetime.combine(day, time.min, tzinfo=tz)
    return start, start + timedelta(days=1)
