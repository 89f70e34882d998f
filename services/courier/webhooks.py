"""Partner webhooks: verified on the raw body, deduplicated, turned into events via the outbox."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shared.contracts import topics
from shared.contracts.events import (
    CodPaid,
    Delivered,
    DeliveryFailed,
    HandedToCourier,
    ReturnedToOffice,
    new_event,
)
from shared.http import Problem, problem_response
from shared.logging import get_logger
from shared.outbox import add_event

from .domain import ShipmentState, apply_partner_event, cod_mismatch
from .partners import JNT_ACK, PartnerEvent, WebhookRejected
from .partners.base import MAX_WEBHOOK_BODY_BYTES

log = get_logger(__name__)
router = APIRouter(tags=["partner webhooks"])

_ACK: dict[str, Any] = {"jnt": JNT_ACK, "pos": {"status": "ok"}}


@router.post("/webhooks/{partner}")
async def partner_webhook(partner: str, request: Request) -> Any:
    rt = request.app.state.rt
    adapter = rt.extras["partners"].get(partner)
    if adapter is None:
        return problem_response(404, f"Unknown partner {partner!r}", "Known: pos, jnt")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_WEBHOOK_BODY_BYTES:
        return problem_response(413, f"Body larger than {MAX_WEBHOOK_BODY_BYTES} bytes")
    raw = await request.body()
    try:
        facts = adapter.parse_webhook(request.headers, raw, time.time())
    except WebhookRejected as exc:
        log.warning("partner callback rejected", partner=partner, status=exc.status_code, reason=exc.reason)
        return problem_response(exc.status_code, exc.reason)
    async with rt.pool.acquire() as conn, conn.transaction():
        for fact in facts:
            await apply_fact(conn, rt.schema, fact)
    return JSONResponse(_ACK[partner])


async def apply_fact(conn: asyncpg.Connection, schema: str, fact: PartnerEvent) -> None:
    fresh = await conn.fetchval(
        "INSERT INTO partner_callbacks (partner_event_id, partner, waybill, kind, occurred_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
        fact.partner_event_id,
        fact.partner,
        fact.waybill,
        fact.kind,
        fact.occurred_at,
    )
    if not fresh:
        return  # the partner sent this callback before: already applied
    row = await conn.fetchrow(
        "SELECT * FROM shipments WHERE waybill = $1 AND partner = $2 FOR UPDATE",
        fact.waybill,
        fact.partner,
    )
    if row is None:
        # 404 rolls the transaction back, so the partner's retry is applied once we know the waybill
        raise Problem(404, "Resi tidak dikenal / Unknown waybill", fact.waybill)
    state = ShipmentState(
        handed=row["handed"],
        cod_paid=row["cod_paid"],
        delivered=row["delivered"],
        returned=row["returned"],
        failed_attempts=row["failed_attempts"],
    )
    decision = apply_partner_event(state, fact.kind)
    anomalies = [a for a in (decision.anomaly,) if a]
    if topics.COD_PAID in decision.emit:
        mismatch = cod_mismatch(row["cod_fee"], fact.cod_amount)
        if mismatch:
            anomalies.append(mismatch)
    for detail in anomalies:
        await conn.execute(
            "INSERT INTO shipment_anomalies (request_id, waybill, detail) VALUES ($1, $2, $3)",
            row["request_id"],
            fact.waybill,
            detail,
        )
        log.warning("shipment anomaly", request_id=str(row["request_id"]), detail=detail)
    new = decision.state
    at: datetime = fact.occurred_at
    await conn.execute(
        """
        UPDATE shipments SET status = $2, handed = $3, cod_paid = $4, delivered = $5,
            returned = $6, failed_attempts = $7,
            handed_at = CASE WHEN $3 AND handed_at IS NULL THEN $8 ELSE handed_at END,
            cod_paid_at = CASE WHEN $4 AND cod_paid_at IS NULL THEN $8 ELSE cod_paid_at END,
            cod_amount_collected = CASE WHEN $4 AND cod_amount_collected IS NULL THEN $9
                                        ELSE cod_amount_collected END,
            delivered_at = CASE WHEN $5 AND delivered_at IS NULL THEN $8 ELSE delivered_at END,
            received_by = coalesce(received_by, $10),
            documents_collected = coalesce(documents_collected, $11),
            updated_at = now()
        WHERE request_id = $1
        """,
        row["request_id"],
        new.status,
        new.handed,
        new.cod_paid,
        new.delivered,
        new.returned,
        new.failed_attempts,
        at,
        fact.cod_amount if fact.kind == "cod_collected" else None,
        fact.received_by if fact.kind == "delivered" else None,
        fact.documents_collected if fact.kind == "delivered" else None,
    )
    for topic in decision.emit:
        await add_event(
            conn,
            new_event(
                topic,
                request_id=row["request_id"],
                correlation_id=row["correlation_id"],
                causation_id=fact.partner_event_id,
                producer="courier",
                occurred_at=at,
                data=_payload(topic, row, fact, new),
            ),
            schema,
        )


def _payload(topic: str, row: asyncpg.Record, fact: PartnerEvent, state: ShipmentState) -> Any:
    partner, waybill, at = fact.partner, fact.waybill, fact.occurred_at
    if topic == topics.HANDED_TO_COURIER:
        return HandedToCourier(partner=partner, waybill=waybill, cod_amount=row["cod_fee"], handed_at=at)
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
