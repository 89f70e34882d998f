"""Partner webhooks: verified on the raw body, deduplicated, turned into events via the outbox.

Two statements per callback and no explicit transaction (``apply_fact``): read the shipment and
whether this event id was seen; apply the state machine in Python; store the new state, the
callback's dedupe row, the anomalies, the custody step and the events in one statement that only
writes if the shipment is still as it was read (compare-and-set). A concurrent callback of the same
parcel that got there first makes it read and decide again. Usually one statement: the shipment
as this process last wrote it (its booking, the callback before) stands in for the read
(``known_shipments.py``), and the store's compare-and-set checks it the same way. Nothing
waits on Kafka or on another HTTP call, so the partner gets its answer in milliseconds. Refusals
(a clear 4xx or 503, no event, nothing stored):

- 401: bad or missing signature, timestamp outside the 5-minute window (a replay);
- 400: a body that is not what the partner sends (not JSON / form, missing fields);
- 413: a body over ``MAX_WEBHOOK_BODY_BYTES``, refused before it is read whole;
- 404: an unknown partner, or a waybill we did not book: nothing of that fact is stored, so when
  the partner retries after our booking is stored, it is applied then. A callback naming a
  waybill this process is still booking (the partner called back before our booking's commit)
  first waits for those bookings, at most ``BOOKING_SETTLE_S``. The facts of the same
  callback before it are stored (each fact is atomic on its own); the retry finds them seen.
- 503: a fact that lost ``STORE_ATTEMPTS`` races in a row to other writes of its shipment: nothing
  of it is stored, and the partner retries.

A callback sent again with the same event id is acknowledged (200) and only counted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shared.contracts import topics
from shared.contracts.events import (
    CodPaid,
    Delivered,
    DeliveryFailed,
    Envelope,
    HandedToCourier,
    ReturnedToOffice,
    new_event,
)
from shared.db.pool import Pool
from shared.http import Problem, problem_response
from shared.logging import get_logger
from shared.outbox import queue_args, queue_cte, wake_relay

from .booking import bookings_in_flight
from .domain import ShipmentState, apply_partner_event, cod_mismatch, originals_after_delivery
from .known_shipments import KnownShipments, known_shipments
from .partners import JNT_ACK, PartnerEvent, WebhookRejected
from .partners.base import MAX_WEBHOOK_BODY_BYTES

log = get_logger(__name__)
router = APIRouter(tags=["partner webhooks"])

_ACK: dict[str, Any] = {"jnt": JNT_ACK, "pos": {"status": "ok"}}


class BodyTooLarge(Exception):
    pass


async def read_capped(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it passes ``limit`` (a chunked body has no length)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/webhooks/{partner}")
async def partner_webhook(partner: str, request: Request) -> Any:
    rt = request.app.state.rt
    adapter = rt.extras["partners"].get(partner)
    if adapter is None:
        return problem_response(404, f"Unknown partner {partner!r}", "Known: pos, jnt")
    try:
        raw = await read_capped(request, MAX_WEBHOOK_BODY_BYTES)
    except BodyTooLarge:
        log.warning("partner callback rejected", partner=partner, status=413, reason="too large")
        return problem_response(413, f"Body larger than {MAX_WEBHOOK_BODY_BYTES} bytes")
    try:
        facts = adapter.parse_webhook(request.headers, raw, time.time())
    except WebhookRejected as exc:
        log.warning("partner callback rejected", partner=partner, status=exc.status_code,
                    reason=exc.reason)
        return problem_response(exc.status_code, exc.reason)
    if facts:  # only events we do not track (acknowledged): no connection to take
        flight = bookings_in_flight(rt)

        def settle(waybill: str) -> Awaitable[bool]:
            return flight.settle(waybill, BOOKING_SETTLE_S)

        originals_days = timedelta(days=rt.settings.originals_return_days)
        await apply_facts(rt.pool, rt.schema, facts, originals_days, settle,
                          known_shipments(rt))
    return JSONResponse(_ACK[partner])


class UnknownWaybill(Problem):
    def __init__(self, waybill: str) -> None:
        super().__init__(404, "Resi tidak dikenal / Unknown waybill", waybill)


async def apply_facts(
    pool: Pool,
    schema: str,
    facts: list[PartnerEvent],
    originals_days: timedelta = timedelta(days=7),
    settle: Callable[[str], Awaitable[bool]] | None = None,
    known: KnownShipments | None = None,
) -> None:
    """Apply a callback's facts in order, each atomic on its own (``apply_fact``).

    A fact naming a waybill we do not know waits once, through ``settle(waybill)``, for the
    bookings this process has in flight (``booking.BookingsInFlight``), then is read again. The
    wait holds no connection: the booking it waits for needs one to store its waybill. (Holding
    it, callbacks that overtook their bookings took the whole pool at 50 lifecycles/s, and the
    bookings then waited for them: courier fell behind, each such callback 2 s late.)"""
    for fact in facts:
        waiting = settle  # once per fact: then the waybill is known, or not ours
        while True:
            try:
                async with pool.acquire() as conn:
                    await apply_fact(conn, schema, fact, originals_days, known)
                break
            except UnknownWaybill:  # the connection is back in the pool here
                if waiting is None or not await waiting(fact.waybill):
                    # nothing stored: the partner's retry is applied once we know the waybill
                    log.warning("partner callback rejected", partner=fact.partner, status=404,
                                reason="unknown waybill", waybill=fact.waybill)
                    raise
                waiting = None


# What the decision needs, and whether the partner sent this event id before. No lock: the store
# below only writes if these columns are still what was read.
_READ = """
SELECT request_id, correlation_id, status, handed, cod_paid, delivered, returned,
    failed_attempts, cod_fee, requirement_documents <> '[]'::jsonb AS has_originals,
    EXISTS (SELECT FROM partner_callbacks WHERE partner_event_id = $3) AS seen
FROM shipments WHERE waybill = $1 AND partner = $2
"""

# The decision stored in one statement, if the shipment is still as read ($22..$29) and the event id
# still unseen: the shipment's new state, the callback's dedupe row, the anomalies (usually none),
# on a delivery with originals to bring back the first custody step, and the events it emits
# (shared.outbox.queue_cte). A concurrent writer of the same shipment holds its row lock until it
# commits; the UPDATE then checks the columns again on the new row (READ COMMITTED) and writes
# nothing if they changed. The event id's NOT EXISTS reads the statement's snapshot only: a callback
# with the same event id committed meanwhile (possibly for another parcel, which takes no lock we
# wait on) is caught by the dedupe row's primary key instead, whose violation aborts the whole
# statement, shipment included; ``apply_fact`` then reads again and finds the id seen.
_STORE = """
WITH shipment AS (
    UPDATE shipments SET status = $2, handed = $3, cod_paid = $4, delivered = $5,
        returned = $6, failed_attempts = $7,
        -- a pickup scan that arrives late still tells when the courier took the parcel
        handed_at = CASE WHEN $12 = 'picked_up' AND $3 THEN least(coalesce(handed_at, $8), $8)
                         WHEN $3 AND handed_at IS NULL THEN $8 ELSE handed_at END,
        cod_paid_at = CASE WHEN $4 AND cod_paid_at IS NULL THEN $8 ELSE cod_paid_at END,
        cod_amount_collected = CASE WHEN $4 AND cod_amount_collected IS NULL THEN $9
                                    ELSE cod_amount_collected END,
        delivered_at = CASE WHEN $5 AND delivered_at IS NULL THEN $8 ELSE delivered_at END,
        -- names and free text are not written back once erased (retention.py)
        received_by = CASE WHEN personal_data_erased_at IS NULL
                           THEN coalesce(received_by, $10) END,
        documents_collected = coalesce(documents_collected, $11),
        last_failure_reason = CASE WHEN personal_data_erased_at IS NOT NULL THEN NULL
                                   WHEN $12 = 'delivery_failed' AND NOT $5 THEN $13
                                   ELSE last_failure_reason END,
        last_failed_at = CASE WHEN $12 = 'delivery_failed' AND NOT $5 THEN $8
                              ELSE last_failed_at END,
        returned_at = CASE WHEN $6 AND returned_at IS NULL THEN $8 ELSE returned_at END,
        return_reason = CASE WHEN personal_data_erased_at IS NOT NULL THEN NULL
                             WHEN $6 AND return_reason IS NULL THEN $13
                             ELSE return_reason END,
        originals_status = CASE WHEN $14 THEN $15
                                WHEN $6 AND NOT $5 THEN 'none' ELSE originals_status END,
        originals_due_at = CASE WHEN $14 THEN $8 + $16::interval ELSE originals_due_at END,
        updated_at = now()
    WHERE request_id = $1
      AND (status, handed, cod_paid, delivered, returned, failed_attempts, cod_fee,
           requirement_documents <> '[]'::jsonb)
          IS NOT DISTINCT FROM
          ($22::text, $23::boolean, $24::boolean, $25::boolean, $26::boolean, $27::integer,
           $28::integer, $29::boolean)
      AND NOT EXISTS (SELECT FROM partner_callbacks WHERE partner_event_id = $30)
    RETURNING request_id
), callback AS (
    INSERT INTO partner_callbacks (partner_event_id, partner, waybill, kind, occurred_at,
        cod_amount, last_received_at, request_id)
    SELECT $30, $31, $17, $12, $8, $32, now(), request_id FROM shipment
    RETURNING request_id
), anomaly AS (
    INSERT INTO shipment_anomalies (request_id, waybill, detail)
    SELECT c.request_id, $17, a.detail
    FROM callback c, unnest($18::text[]) WITH ORDINALITY AS a(detail, n) ORDER BY a.n
), custody AS (
    INSERT INTO originals_custody (request_id, step, actor, detail, at)
    SELECT request_id, $19, $20, $21, $8 FROM callback WHERE $19::text IS NOT NULL
), """ + queue_cte(33, only_if="callback") + """
SELECT EXISTS (SELECT FROM callback)
"""

# Read, decide, store: tried again while concurrent callbacks of the same parcel keep winning the
# race (each try is a few milliseconds). Past that the partner is told to retry (503): it does, and
# nothing of this fact was stored meanwhile.
STORE_ATTEMPTS = 20

# How long a callback naming a waybill we do not know waits for this process's bookings in flight
# (one of them may be about to store it) before the 404.
BOOKING_SETTLE_S = 2.0


async def apply_fact(
    conn: asyncpg.Connection,
    schema: str,
    fact: PartnerEvent,
    originals_days: timedelta = timedelta(days=7),
    known: KnownShipments | None = None,
) -> None:
    """Apply one partner fact (atomic on its own; see the module's docstring); UnknownWaybill
    (404), with nothing stored, when no shipment has its waybill.

    Meant for a connection outside a transaction (each statement commits): a store lost to the
    same event id stored meanwhile fails on the dedupe row's key and is read again, which an
    enclosing transaction, aborted by that failure, would not allow.

    With ``known``, the shipment as this process last wrote it is tried first, in place of the
    read; a store that writes nothing on it (the shipment changed, the event id was seen) is read
    and decided again."""
    if known is not None and (row := known.get(fact.partner, fact.waybill)) is not None:
        try:
            if await _store_and_remember(conn, row, fact, originals_days, known):
                wake_relay(schema)
                return
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "partner_callbacks_pkey":
                raise
        known.forget(fact.partner, fact.waybill)  # stale, or a repeat: read it below
    for _ in range(STORE_ATTEMPTS):
        row = await conn.fetchrow(_READ, fact.waybill, fact.partner, fact.partner_event_id)
        if row is None:
            raise UnknownWaybill(fact.waybill)
        if row["seen"]:
            # the partner sent this callback before: already applied; counted for reconciliation
            await conn.execute(
                "UPDATE partner_callbacks SET times_received = times_received + 1,"
                " last_received_at = now() WHERE partner_event_id = $1",
                fact.partner_event_id,
            )
            log.info("duplicate partner callback", partner=fact.partner, waybill=fact.waybill,
                     partner_event_id=fact.partner_event_id)
            return
        try:
            if await _store_and_remember(conn, row, fact, originals_days, known):
                wake_relay(schema)  # the store was its own transaction: committed
                return
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "partner_callbacks_pkey":
                raise
            # the same event id was stored meanwhile; nothing of this store was: read again
    log.warning("partner callback raced too long, partner told to retry", partner=fact.partner,
                waybill=fact.waybill, partner_event_id=fact.partner_event_id,
                attempts=STORE_ATTEMPTS)
    raise Problem(503, "Sedang sibuk, kirim ulang / Busy, please send again", fact.waybill)


async def _store_and_remember(
    conn: asyncpg.Connection,
    row: Mapping[str, Any],
    fact: PartnerEvent,
    originals_days: timedelta,
    known: KnownShipments | None,
) -> bool:
    new = await _decide_and_store(conn, row, fact, originals_days)
    if new is None:
        return False
    if known is not None:
        # the row as the store left it: the decided state's columns, and its status
        known.remember(fact.partner, fact.waybill, {**row, **asdict(new), "status": new.status})
    return True


async def _decide_and_store(
    conn: asyncpg.Connection,
    row: Mapping[str, Any],
    fact: PartnerEvent,
    originals_days: timedelta,
) -> ShipmentState | None:
    """The state machine on the shipment as read; the new state once stored, None if the
    shipment changed before the store (or the event id was seen meanwhile)."""
    state = ShipmentState(
        handed=row["handed"],
        cod_paid=row["cod_paid"],
        delivered=row["delivered"],
        returned=row["returned"],
        failed_attempts=row["failed_attempts"],
    )
    decision = apply_partner_event(state, fact.kind)
    anomalies = [a for a in (decision.anomaly,) if a]
    if row["status"] == "cancelled":
        anomalies.append(f"{fact.kind} reported for a shipment cancelled at the partner")
    if fact.kind == "cod_collected":
        mismatch = cod_mismatch(row["cod_fee"], fact.cod_amount)
        if mismatch:
            anomalies.append(mismatch)
    new = decision.state
    events = [
        new_event(
            topic,
            request_id=row["request_id"],
            correlation_id=row["correlation_id"],
            causation_id=fact.partner_event_id,
            producer="courier",
            occurred_at=fact.occurred_at,
            data=_payload(topic, row, fact, new),
        )
        for topic in decision.emit
    ]
    stored = await _store_state(
        conn, row, fact, new, topics.DELIVERED in decision.emit, originals_days, anomalies,
        events,
    )
    if not stored:
        return None
    for detail in anomalies:
        log.warning("shipment anomaly", request_id=str(row["request_id"]), detail=detail)
    return new


async def _store_state(
    conn: asyncpg.Connection,
    row: Mapping[str, Any],
    fact: PartnerEvent,
    new: ShipmentState,
    delivered_now: bool,
    originals_days: timedelta,
    anomalies: list[str],
    events: list[Envelope[Any]],
) -> bool:
    kind = fact.kind
    originals = originals_after_delivery(fact.documents_collected) if row["has_originals"] else "none"
    # the chain of custody starts at the door, when there are originals to bring back
    custody_step = None
    if delivered_now and originals != "none":
        custody_step = "collected_at_door" if originals == "with_courier" else originals
    return await conn.fetchval(  # type: ignore[no-any-return]
        _STORE,
        row["request_id"],
        new.status,
        new.handed,
        new.cod_paid,
        new.delivered,
        new.returned,
        new.failed_attempts,
        fact.occurred_at,
        fact.cod_amount if kind == "cod_collected" else None,
        fact.received_by if kind == "delivered" else None,
        fact.documents_collected if kind == "delivered" else None,
        kind,
        fact.reason,
        delivered_now,
        originals,
        originals_days,
        fact.waybill,
        anomalies,
        custody_step,
        f"kurir {fact.partner} (resi {fact.waybill})",
        f"diterima oleh {fact.received_by}" if fact.received_by else None,
        # the shipment as read: the store writes nothing if it changed meanwhile
        row["status"],
        row["handed"],
        row["cod_paid"],
        row["delivered"],
        row["returned"],
        row["failed_attempts"],
        row["cod_fee"],
        row["has_originals"],
        # the callback's dedupe row
        fact.partner_event_id,
        fact.partner,
        fact.cod_amount,
        *queue_args(events),
    )


def _payload(topic: str, row: Mapping[str, Any], fact: PartnerEvent, state: ShipmentState) -> Any:
    partner, waybill, at = fact.partner, fact.waybill, fact.occurred_at
    if topic == topics.HANDED_TO_COURIER:
        return HandedToCourier(
            partner=partner, waybill=waybill, cod_amount=row["cod_fee"], handed_at=at
        )
    if topic == topics.COD_PAID:
        amount = fact.cod_amount if fact.cod_amount is not None else row["cod_fee"]
        return CodPaid(partner=partner, waybill=waybill, amount=amount, paid_at=at)
    if topic == topics.DELIVERED:
        return Delivered(
            partner=partner,
            waybill=waybill,
            delivered_at=at,
            received_by=fact.received_by or "",
            documents_collected=bool(fact.documents_collected),
        )
    if topic == topics.DELIVERY_FAILED:
        return DeliveryFailed(
            partner=partner,
            waybill=waybill,
            failed_at=at,
            reason=fact.reason or "tidak disebutkan",
            attempt=state.failed_attempts,
        )
    return ReturnedToOffice(
        partner=partner, waybill=waybill, returned_at=at, reason=fact.reason or "tidak disebutkan"
    )
