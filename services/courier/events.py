"""Courier learns where to deliver from request-registered and when to book from document-printed.

The two arrive on different topics in any order; the shipment becomes ``to_book`` when both are in.

A consumed batch is applied by ``apply_batch`` with at most two statements, whatever its size: one
upsert of every registration, then one of every print. The per-topic handlers (the consumer's
fallback, one event at a time) call the same function with one event, so both paths share the SQL.
Applying all registrations before all prints gives the same rows as applying the batch in order:

* each kind applies once per shipment (``WHERE NOT registered`` / ``WHERE printed_at IS NULL``),
  so only the first event of a kind per request counts (later ones were no-ops one by one too);
* the two kinds touch different columns, and each moves the status to ``to_book`` only from the
  state the other one leaves (``awaiting_registration`` / ``awaiting_print``): in either order the
  shipment ends ``to_book`` with ``to_book_since = now()`` (one transaction, one ``now()``);
* the only column the order decides is ``correlation_id`` (written by the insert only): both
  statements insert with the correlation id of the request's FIRST event in the batch, the one that
  inserted the row one by one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from shared.contracts import topics
from shared.contracts.events import DocumentPrinted, Envelope, RequestRegistered
from shared.db.pool import advisory_key
from shared.kafka.consumer import Handler, RejectEvent

# Rows are sorted by request_id within each statement. The two statements run one after the
# other, so a batch of several requests first takes an advisory lock per request, all in one
# sorted pass (``_LOCK_REQUESTS``): two instances whose batches mix registrations and prints the
# opposite way (the topics' partitions may sit with different instances) would otherwise lock the
# same shipments in opposite orders and deadlock. HTTP handlers lock one shipment at a time.
_LOCK_REQUESTS = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k"
_NOTE_REGISTRATIONS = """
INSERT INTO shipments AS s (request_id, correlation_id, registered, partner, document_type,
    recipient_name, recipient_phone, address, cod_fee, requirement_documents, status)
SELECT e.request_id, e.correlation_id, true, e.partner, e.document_type, e.recipient_name,
    e.recipient_phone, e.address::jsonb, e.cod_fee, e.requirement_documents::jsonb, 'awaiting_print'
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::int[], $9::text[])
    AS e(request_id, correlation_id, partner, document_type, recipient_name, recipient_phone,
         address, cod_fee, requirement_documents)
ORDER BY e.request_id
ON CONFLICT (request_id) DO UPDATE SET
    registered = true, partner = excluded.partner, document_type = excluded.document_type,
    recipient_name = excluded.recipient_name, recipient_phone = excluded.recipient_phone,
    address = excluded.address, cod_fee = excluded.cod_fee,
    requirement_documents = excluded.requirement_documents,
    status = CASE WHEN s.status = 'awaiting_registration' THEN 'to_book' ELSE s.status END,
    to_book_since = CASE WHEN s.status = 'awaiting_registration' THEN now()
                         ELSE s.to_book_since END,
    next_booking_at = now(), updated_at = now()
WHERE NOT s.registered
  -- a registration replayed after the shipment was erased (retention.py) does not refill it
  AND s.personal_data_erased_at IS NULL
"""

_NOTE_PRINTS = """
INSERT INTO shipments AS s (request_id, correlation_id, printed_at, document_number, status)
SELECT e.request_id, e.correlation_id, e.printed_at, e.document_number, 'awaiting_registration'
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[])
    AS e(request_id, correlation_id, printed_at, document_number)
ORDER BY e.request_id
ON CONFLICT (request_id) DO UPDATE SET
    printed_at = excluded.printed_at, document_number = excluded.document_number,
    status = CASE WHEN s.status = 'awaiting_print' THEN 'to_book' ELSE s.status END,
    to_book_since = CASE WHEN s.status = 'awaiting_print' THEN now() ELSE s.to_book_since END,
    next_booking_at = now(), updated_at = now()
WHERE s.printed_at IS NULL
"""


async def apply_batch(conn: asyncpg.Connection, events: Sequence[Envelope[Any]]) -> None:
    """Apply registrations and prints (in consumed order) with one statement per kind."""
    first_correlation: dict[uuid.UUID, str] = {}
    registered: dict[uuid.UUID, Envelope[RequestRegistered]] = {}
    printed: dict[uuid.UUID, Envelope[DocumentPrinted]] = {}
    for event in events:
        first_correlation.setdefault(event.request_id, event.correlation_id)
        if event.event_type == topics.REQUEST_REGISTERED:
            registered.setdefault(event.request_id, event)  # later ones were no-ops one by one
        elif event.event_type == topics.DOCUMENT_PRINTED:
            printed.setdefault(event.request_id, event)
        else:
            raise RejectEvent(f"courier does not consume {event.event_type}")
    if len(first_correlation) > 1:
        keys = sorted({advisory_key(f"courier:shipment:{r}") for r in first_correlation})
        await conn.execute(_LOCK_REQUESTS, keys)
    if registered:
        rows = [(e, e.data) for _, e in sorted(registered.items(), key=_by_request)]
        await conn.execute(
            _NOTE_REGISTRATIONS,
            [e.request_id for e, _ in rows],
            [first_correlation[e.request_id] for e, _ in rows],
            [d.delivery.partner for _, d in rows],
            [d.document_type.value for _, d in rows],
            [d.delivery.recipient_name for _, d in rows],
            [d.delivery.recipient_phone for _, d in rows],
            [d.delivery.address.model_dump_json() for _, d in rows],
            [d.cod_fee for _, d in rows],
            [json.dumps(d.requirement_documents) for _, d in rows],
        )
    if printed:
        prints = [(e, e.data) for _, e in sorted(printed.items(), key=_by_request)]
        await conn.execute(
            _NOTE_PRINTS,
            [e.request_id for e, _ in prints],
            [first_correlation[e.request_id] for e, _ in prints],
            [d.printed_at for _, d in prints],
            [d.document_number for _, d in prints],
        )


def _by_request(item: tuple[uuid.UUID, Any]) -> uuid.UUID:
    return item[0]


async def _apply_one(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    await apply_batch(conn, [event])


def handlers() -> dict[str, Handler]:
    # the consumer's fallback (one savepoint per event) and the subscribed topics
    return {topics.REQUEST_REGISTERED: _apply_one, topics.DOCUMENT_PRINTED: _apply_one}

