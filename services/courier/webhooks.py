"""Partner webhooks: verified on the raw body, deduplicated, turned into events via the outbox.

One short transaction per callback: lock the shipment and dedupe on the partner's event id (one
statement), apply the state machine, store the new state with its anomalies and custody step (one
statement), write the events. Nothing waits on Kafka or on another HTTP call, so the partner gets
its answer in milliseconds. Refusals (a clear 4xx, no event, nothing stored):

- 401: bad or missing signature, timestamp outside the 5-minute window (a replay);
- 400: a body that is not what the partner sends (not JSON / form, missing fields);
- 413: a body over ``MAX_WEBHOOK_BODY_BYTES``, refused before it is read whole;
- 404: an unknown partner, or a waybill we did not book. The transaction is rolled back, so when
  the partner retries after our booking is stored, the callback is applied then.

A callback sent again with the same event id is acknowledged (200) and only counted.
"""

from __future__ import annotations

import time
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
from shared.http import Problem, problem_response
from shared.logging import get_logger
from shared.outbox import queue_args, queue_cte

from .domain import ShipmentState, apply_partner_event, cod_mismatch, originals_after_delivery
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
    if facts:  # only events we do not track (acknowledged): no transaction to open
        originals_days = timedelta(days=rt.settings.originals_return_days)
        async with rt.pool.acquire() as conn, conn.transaction():
            for fact in facts:
                await apply_fact(conn, rt.schema, fact, originals_days)
    return JSONResponse(_ACK[partner])


# The shipment first: its row lock orders concurrent callbacks of one parcel. The callback's dedupe
# row is written in the same round trip, already naming the request; ``fresh`` is false when the
# partner sent this event id before. Only the columns the decision needs are read.
_LOCK_AND_RECORD = """
WITH shipment AS (
    SELECT request_id, correlation_id, status, handed, cod_paid, delivered, returned,
        failed_attempts, cod_fee, requirement_documents <> '[]'::jsonb AS has_originals
    FROM shipments WHERE waybill = $1 AND partner = $2
    FOR UPDATE
), callback AS (
    INSERT INTO partner_callbacks (partner_event_id, partner, waybill, kind, occurred_at,
        cod_amount, last_received_at, request_id)
    SELECT $3, $2, $1, $4, $5, $6, now(), request_id FROM shipment
    ON CONFLICT DO NOTHING
    RETURNING true
)
SELECT shipment.*, EXISTS (SELECT FROM callback) AS fresh FROM shipment
"""

# The decision stored in one round trip: the shipment's new state, the anomalies (usually none),
# on a delivery with originals to bring back the first custody step, and the events it emits
# (shared.outbox.queue_cte).
_STORE = """
WITH anomaly AS (
    INSERT INTO shipment_anomalies (request_id, waybill, detail)
    SELECT $1, $17, a.detail FROM unnest($18::text[]) WITH ORDINALITY AS a(detail, n) ORDER BY a.n
), custody AS (
    INSERT INTO originals_custody (request_id, step, actor, detail, at)
    SELECT $1, $19, $20, $21, $8 WHERE $19::text IS NOT NULL
), """ + queue_cte(22) + """
UPDATE shipments SET status = $2, handed = $3, cod_paid = $4, delivered = $5,
    returned = $6, failed_attempts = $7,
    -- a pickup scan that arrives late still tells when the courier took the parcel
    handed_at = CASE WHEN $12 = 'picked_up' AND $3 THEN least(coalesce(handed_at, $8), $8)
                     WHEN $3 AND handed_at IS NULL THEN $8 ELSE handed_at END,
    cod_paid_at = CASE WHEN $4 AND cod_paid_at IS NULL THEN $8 ELSE cod_paid_at END,
    cod_amount_collected = CASE WHEN $4 AND cod_amount_collected IS NULL THEN $9
                                ELSE cod_amount_collected END,
    delivered_at = CASE WHEN $5 AND delivered_at IS NULL THEN $8 ELSE delivered_at END,
    received_by = coalesce(received_by, $10),
    documents_collected = coalesce(documents_collected, $11),
    last_failure_reason = CASE WHEN $12 = 'delivery_failed' AND NOT $5 THEN $13
                               ELSE last_failure_reason END,
    last_failed_at = CASE WHEN $12 = 'delivery_failed' AND NOT $5 THEN $8
                          ELSE last_failed_at END,
    returned_at = CASE WHEN $6 AND returned_at IS NULL THEN $8 ELSE returned_at END,
    return_reason = CASE WHEN $6 AND return_reason IS NULL THEN $13
                         ELSE return_reason END,
    originals_status = CASE WHEN $14 THEN $15
                            WHEN $6 AND NOT $5 THEN 'none' ELSE originals_status END,
    originals_due_at = CASE WHEN $14 THEN $8 + $16::interval ELSE originals_due_at END,
    updated_at = now()
WHERE request_id = $1
"""


async def apply_fact(
    conn: asyncpg.Connection,
    schema: str,
    fact: PartnerEvent,
    originals_days: timedelta = timedelta(days=7),
) -> None:
    row = await conn.fetchrow(
        _LOCK_AND_RECORD,
        fact.waybill,
        fact.partner,
        fact.partner_event_id,
        fact.kind,
        fact.occurred_at,
        fact.cod_amount,
    )
    if row is None:
        # 404 rolls the transaction back, so the partner's retry is applied once we know the waybill
        log.warning("partner callback rejected", partner=fact.partner, status=404,
                    reason="unknown waybill", waybill=fact.waybill)
        raise Problem(404, "Resi tidak dikenal / Unknown waybill", fact.waybill)
    if not row["fresh"]:
        # the partner sent this callback before: already applied; counted for reconciliation
        await conn.execute(
            "UPDATE partner_callbacks SET times_received = times_received + 1,"
            " last_received_at = now() WHERE partner_event_id = $1",
            fact.partner_event_id,
        )
        log.info("duplicate partner callback", partner=fact.partner, waybill=fact.waybill,
                 partner_event_id=fact.partner_event_id)
        return
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
    for detail in anomalies:
        log.warning("shipment anomaly", request_id=str(row["request_id"]), detail=detail)
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
    await _store_state(
        conn, row, fact, new, topics.DELIVERED in decision.emit, originals_days, anomalies,
        events, schema,
    )


async def _store_state(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    fact: PartnerEvent,
    new: ShipmentState,
    delivered_now: bool,
    originals_days: timedelta,
    anomalies: list[str],
    events: list[Envelope[Any]],
    schema: str,
) -> None:
    kind = fact.kind
    originals = originals_after_delivery(fact.documents_collected) if row["has_originals"] else "none"
    # the chain of custody starts at the door, when there are originals to bring back
    custody_step = None
    if delivered_now and originals != "none":
        custody_step = "collected_at_door" if originals == "with_courier" else originals
    await conn.execute(
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
        *queue_args(events, schema),
    )


def _payload(topic: str, row: asyncpg.Record, fact: PartnerEvent, state: ShipmentState) -> Any:
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
