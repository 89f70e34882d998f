"""The shipment's state machine. No I/O here.

booked -> handed to courier -> COD paid and delivered, in either order -> completed.
A failed attempt (delivery_failed) may be followed by a redelivery or a return to the office.
Callbacks come late, twice and out of order: a fact that implies an earlier one (delivered without a
pickup scan) emits the earlier one first; a fact that no longer fits (a failure after delivery) is
recorded as an anomaly, never crashed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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

    if kind in ("cod_collected", "delivered") and state.returned:
        return Decision(state, anomaly=f"{kind} after the shipment was returned to the office")

    anomaly = None
    if kind in ("cod_collected", "delivered", "delivery_failed", "returned") and not state.handed:
        # the pickup scan is late or lost: the later fact proves the courier has the parcel
        state = replace(state, handed=True)
        emit.append(topics.HANDED_TO_COURIER)
        anomaly = f"{kind} before any pickup scan"

    if kind == "cod_collected":
        if state.cod_paid:
            return Decision(state, emit, anomaly)
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
