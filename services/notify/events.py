"""Notify records the messages to send for each lifecycle event; the sender loop sends them.

One row per (event, recipient), written with the event's inbox row: a redelivered event is skipped
by the inbox, and the unique key holds even without it. A replayed dead letter (a send that was
given up, see ``sender.give_up``) re-arms its failed rows.

A consumed batch is applied by ``apply_batch`` in a few statements whatever its size (the
consumer's fast path); the per-topic handlers call it with one event (the fallback path, one
savepoint per event), so both paths have one implementation. The result is the one of noting the
events one by one in the batch's order: that is the rule the code below keeps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from shared.contracts import topics
from shared.contracts.events import Envelope, RequestRegistered
from shared.db.pool import advisory_key
from shared.kafka.consumer import Handler

from .domain import DOOR_EVENTS, recipients_for
from .templates import TEMPLATES

_DOOR_EVENTS = sorted(DOOR_EVENTS)

# Whether the person at the door gets door messages depends on request-registered, which may be
# consumed after the door event (topics are not ordered) and, with several notify instances, at
# the same time: a request's registration and door events are noted one transaction at a time.
# Keys in one order, so that two batches never wait for each other's locks. (The other events'
# rows depend on nothing another transaction writes: they take no lock.)
_LOCK = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k"

# Who to tell, in one round trip. The parts of one statement share its snapshot and none sees
# another's writes: all three read the tables as they were before the batch, and ``apply_batch``
# works out, in order, what the batch's own events change.
_RECIPIENTS = """
WITH registered AS (
    -- who to tell, from request-registered (the first one of a request wins)
    INSERT INTO recipients (request_id, phone, name, tracking_code, document_type, partner,
        cod_fee, requirement_documents, registered_at, delivery_name, delivery_phone)
    SELECT request_id, phone, name, tracking_code, document_type, partner, cod_fee,
        requirement_documents::jsonb, registered_at, delivery_name, delivery_phone
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::integer[], $8::text[], $9::timestamptz[], $10::text[], $11::text[])
        AS r(request_id, phone, name, tracking_code, document_type, partner, cod_fee,
             requirement_documents, registered_at, delivery_name, delivery_phone)
    ON CONFLICT DO NOTHING
), door_copies AS (
    -- door events noted (in an earlier batch) before the recipient was known: the person at the
    -- door is told too
    INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data,
        recipient, source)
    SELECT event_id, request_id, event_type, occurred_at, event_data, 'delivery', source
    FROM notifications
    WHERE request_id = ANY($12::uuid[]) AND recipient = 'applicant'
      AND event_type = ANY($13::text[])
    ON CONFLICT DO NOTHING
)
-- for the batch's door events: whether someone other than the applicant is at the door
SELECT request_id, delivery_phone IS NOT NULL AS separate
FROM recipients WHERE request_id = ANY($14::uuid[])
"""

# The batch's messages, in consumed order (ids follow it; the ops listing is by id). Each
# (event, recipient) at most once: a replayed dead letter re-arms its failed row (not an erased
# one: retention.py).
_NOTE = """
INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data, recipient,
    source)
SELECT event_id, request_id, event_type, occurred_at, event_data::jsonb, recipient, source
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
    $7::text[]) AS n(event_id, request_id, event_type, occurred_at, event_data, recipient, source)
ON CONFLICT (event_id, recipient) DO UPDATE
    SET status = 'pending', attempts = 0, next_attempt_at = now(), error = NULL,
        claim_token = NULL, claimed_until = NULL, source = EXCLUDED.source
    WHERE notifications.status = 'failed' AND notifications.personal_data_erased_at IS NULL
"""

# Door events of this batch noted for the applicant alone, before a request-registered of the same
# batch naming someone else at the door: copied as stored (as ``door_copies`` above does).
_COPY_FOR_DOOR = """
INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data, recipient,
    source)
SELECT event_id, request_id, event_type, occurred_at, event_data, 'delivery', source
FROM notifications WHERE event_id = ANY($1::uuid[]) AND recipient = 'applicant'
ON CONFLICT DO NOTHING
"""


def _separate_door_contact(data: RequestRegistered) -> bool:
    return data.delivery.recipient_phone != data.applicant.phone


async def apply_batch(conn: asyncpg.Connection, events: Sequence[Envelope[Any]]) -> None:
    """Note ``events`` (fresh, in consumed order) as if one by one, in 1 to 4 statements.

    Any exception rolls the batch back; the consumer then applies the events one at a time and
    dead-letters the one that fails.
    """
    registered: dict[uuid.UUID, Envelope[Any]] = {}  # the first request-registered of a request
    separate_registered: set[uuid.UUID] = set()  # requests with one naming someone at the door
    door: set[uuid.UUID] = set()  # requests with a door event
    for event in events:
        if event.event_type == topics.REQUEST_REGISTERED:
            registered.setdefault(event.request_id, event)
            if _separate_door_contact(event.data):
                separate_registered.add(event.request_id)
        elif event.event_type in DOOR_EVENTS:
            door.add(event.request_id)

    if registered or door:
        keys = sorted({advisory_key(f"notify:{r}") for r in registered.keys() | door})
        await conn.execute(_LOCK, keys)
        rows = await conn.fetch(_RECIPIENTS, *_recipient_columns(registered.values()),
                                sorted(separate_registered), _DOOR_EVENTS, sorted(door))
        # whether the person at the door is someone else, per request, as each event finds it
        separate = {row["request_id"]: row["separate"] for row in rows}
    else:
        separate = {}

    notes: list[tuple[Any, ...]] = []
    applicant_only: dict[uuid.UUID, list[uuid.UUID]] = {}  # door events of this batch, per request
    copies: list[uuid.UUID] = []
    for event in events:
        request_id = event.request_id
        if event.event_type == topics.REQUEST_REGISTERED:
            names_door = _separate_door_contact(event.data)
            separate.setdefault(request_id, names_door)  # the recipients row, if it is the first
            if names_door:
                copies.extend(applicant_only.pop(request_id, ()))
        if event.event_type not in TEMPLATES:
            continue
        to = recipients_for(event.event_type, separate.get(request_id, False))
        if event.event_type in DOOR_EVENTS and "delivery" not in to:
            applicant_only.setdefault(request_id, []).append(event.event_id)
        source = event.model_dump_json()
        data = event.data.model_dump_json(exclude={"applicant", "delivery"})  # no NIK, no address
        for recipient in to:
            notes.append((event.event_id, request_id, event.event_type, event.occurred_at, data,
                          recipient, source))
    if notes:
        await conn.execute(_NOTE, *(list(column) for column in zip(*notes, strict=True)))
    if copies:  # rare: a door event consumed before its request-registered, in the same batch
        await conn.execute(_COPY_FOR_DOOR, copies)


def _recipient_columns(events: Iterable[Envelope[Any]]) -> list[list[Any]]:
    """The ``recipients`` rows of request-registered events, as the statement's 11 arrays."""
    rows = []
    for event in events:
        data: RequestRegistered = event.data
        door = data.delivery
        separate = _separate_door_contact(data)
        rows.append((
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
        ))
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 11


async def note_event(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    """One event: the fallback path (one savepoint per event) and replays."""
    await apply_batch(conn, [event])


def handlers() -> dict[str, Handler]:
    return {topic: note_event for topic in topics.EVENT_TOPICS}
