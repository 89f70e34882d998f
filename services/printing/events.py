"""Printing queues every registered request.

A consumed batch is applied by ``apply_batch`` with one statement (the consumer's fast path); the
per-topic handler applies one event through the same function (the consumer's fallback path, one
savepoint per event), so both paths have one implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from shared.contracts import topics
from shared.contracts.events import Envelope, RequestRegistered
from shared.kafka.consumer import Handler, RejectEvent

# One row per event, from parallel arrays. ORDER BY request_id: concurrent batches (two instances
# during a rebalance) insert their keys in the same order, so they wait for each other instead of
# deadlocking; ``n`` (the position in the batch) breaks ties, so when one request is registered
# twice in a batch the first event wins, as applying them one by one would (DO NOTHING, unlike DO
# UPDATE, may meet a row inserted earlier in the same statement).
_QUEUE_JOBS = """
INSERT INTO print_jobs (request_id, tracking_code, document_type, applicant_name, applicant_nik,
    correlation_id, registered_at)
SELECT request_id, tracking_code, document_type, applicant_name, applicant_nik, correlation_id,
    registered_at
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::timestamptz[]) WITH ORDINALITY
    AS e(request_id, tracking_code, document_type, applicant_name, applicant_nik, correlation_id,
        registered_at, n)
ORDER BY request_id, n
ON CONFLICT (request_id) DO NOTHING
"""


async def apply_batch(conn: asyncpg.Connection, events: Sequence[Envelope[Any]]) -> None:
    """A print job for every registered request; one already queued is left as it is."""
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    for event in events:
        data = event.data
        if not isinstance(data, RequestRegistered):  # only request-registered is subscribed
            raise RejectEvent(f"printing does not apply {event.event_type}")
        row = (
            event.request_id,
            data.tracking_code,
            data.document_type.value,
            data.applicant.name,
            data.applicant.nik,
            event.correlation_id,
            event.occurred_at,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    await conn.execute(_QUEUE_JOBS, *columns)


async def queue_job(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    await apply_batch(conn, [event])


def handlers() -> dict[str, Handler]:
    return {topics.REQUEST_REGISTERED: queue_job}
