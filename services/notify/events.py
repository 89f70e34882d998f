"""Notify records the messages to send for each lifecycle event; the sender loop sends them.

One row per (event, recipient), written with the event's inbox row: a redelivered event is skipped
by the inbox, and the unique key holds even without it. A replayed dead letter (a send that was
given up, see ``sender.give_up``) re-arms its failed rows.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from shared.contracts import topics
from shared.contracts.events import Envelope, RequestRegistered
from shared.db.pool import advisory_key
from shared.kafka.consumer import Handler

from .domain import DOOR_EVENTS, recipients_for
from .templates import TEMPLATES

_NOTE = """
INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data, recipient,
    source)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
ON CONFLICT (event_id, recipient) DO UPDATE
    SET status = 'pending', attempts = 0, next_attempt_at = now(), error = NULL,
        claim_token = NULL, claimed_until = NULL, source = EXCLUDED.source
    WHERE notifications.status = 'failed'
"""


async def note_event(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    # Whether the person at the door gets door messages depends on request-registered, which may
    # be consumed after the door event (topics are not ordered) and, with several notify
    # instances, at the same time: the request's events are noted one at a time.
    lock = advisory_key(f"notify:{event.request_id}")
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
    separate_door_contact = False
    if event.event_type == topics.REQUEST_REGISTERED:
        separate_door_contact = await _note_recipient(conn, event)
    else:
        separate_door_contact = bool(
            await conn.fetchval(
                "SELECT delivery_phone IS NOT NULL FROM recipients WHERE request_id = $1",
                event.request_id,
            )
        )
    if event.event_type not in TEMPLATES:
        return
    source = event.model_dump_json()
    data = event.data.model_dump_json(exclude={"applicant", "delivery"})  # no NIK, no address
    for recipient in recipients_for(event.event_type, separate_door_contact):
        await conn.execute(
            _NOTE, event.event_id, event.request_id, event.event_type, event.occurred_at, data,
            recipient, source,
        )


async def _note_recipient(conn: asyncpg.Connection, event: Envelope[Any]) -> bool:
    """Store who to tell; return whether someone other than the applicant is at the door."""
    data: RequestRegistered = event.data
    door = data.delivery
    separate = door.recipient_phone != data.applicant.phone
    await conn.execute(
        """
        INSERT INTO recipients (request_id, phone, name, tracking_code, document_type, partner,
            cod_fee, requirement_documents, registered_at, delivery_name, delivery_phone)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11) ON CONFLICT DO NOTHING
        """,
        event.request_id,
        data.applicant.phone,
        data.applicant.name,
        data.tracking_code,
        data.document_type.value,
        door.partner,
        data.cod_fee,
        json.dumps(data.requirement_documents),
        event.occurred_at,
        door.recipient_name if separate else None,
        door.recipient_phone if separate else None,
    )
    if separate:
        # door events noted before the recipient was known: the person at the door is told too
        await conn.execute(
            "INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data,"
            " recipient, source)"
            " SELECT event_id, request_id, event_type, occurred_at, event_data, 'delivery', source"
            " FROM notifications WHERE request_id = $1 AND recipient = 'applicant'"
            " AND event_type = ANY($2::text[]) ON CONFLICT DO NOTHING",
            event.request_id,
            sorted(DOOR_EVENTS),
        )
    return separate


def handlers() -> dict[str, Handler]:
    return {topic: note_event for topic in topics.EVENT_TOPICS}
