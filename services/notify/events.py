"""Notify records one message to send per lifecycle event; the sender loop sends it."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from shared.contracts import topics
from shared.contracts.events import Envelope, RequestRegistered
from shared.kafka.consumer import Handler

from .templates import TEMPLATES


async def note_event(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    if event.event_type == topics.REQUEST_REGISTERED:
        data: RequestRegistered = event.data
        await conn.execute(
            """
            INSERT INTO recipients (request_id, phone, name, tracking_code, document_type, partner,
                cod_fee, requirement_documents, registered_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9) ON CONFLICT DO NOTHING
            """,
            event.request_id,
            data.applicant.phone,
            data.applicant.name,
            data.tracking_code,
            data.document_type.value,
            data.delivery.partner,
            data.cod_fee,
            json.dumps(data.requirement_documents),
            event.occurred_at,
        )
    if event.event_type not in TEMPLATES:
        return
    await conn.execute(
        "INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (event_id) DO NOTHING",
        event.event_id,
        event.request_id,
        event.event_type,
        event.occurred_at,
        event.data.model_dump_json(exclude={"applicant", "delivery"}),  # no NIK, no address here
    )


def handlers() -> dict[str, Handler]:
    return {topic: note_event for topic in topics.EVENT_TOPICS}
