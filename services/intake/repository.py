"""SQL for intake's requests, their timeline and the daily capacity (schema ``intake``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from datetime import date, datetime
from typing import NamedTuple

import asyncpg

from shared.contracts.events import Envelope, RequestRegistered
from shared.outbox import queue_args, queue_cte

from .domain import TERMINAL

_OPEN = "status NOT IN ('delivered', 'returned_to_office', 'rejected')"
_TERMINAL = sorted(TERMINAL)


# The request row, its first timeline entry and its ``request-registered`` event in the outbox, in
# one statement (one round trip instead of three). Both follow the request row: a drawn tracking
# code that is already taken inserts nothing at all (ON CONFLICT on that constraint only; a clash
# on idempotency_key still raises) and the caller draws another, with no pre-check per
# registration.
_INSERT_REGISTERED = """
WITH request AS (
    INSERT INTO requests (request_id, tracking_code, document_type, channel, applicant_name,
        applicant_nik, applicant_phone, delivery, cod_fee, requirement_documents, status,
        correlation_id, idempotency_key, body_hash, phone_last4, intake_via, registered_by,
        service_date)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::jsonb, 'registered', $11, $12, $13,
        right($7, 4), $14, $15, $16)
    ON CONFLICT (tracking_code) DO NOTHING
    RETURNING request_id
), timeline AS (
    INSERT INTO request_timeline (request_id, event_id, event_type, occurred_at, detail)
    SELECT request_id, $17::uuid, $18::text, $19::timestamptz, $20::jsonb FROM request
), """ + queue_cte(21, only_if="request") + """
SELECT true FROM request
"""


async def insert_registered(
    conn: asyncpg.Connection,
    *,
    schema: str,
    event: Envelope[RequestRegistered],
    idempotency_key: str | None,
    body_hash: str | None,
    intake_via: str,
    registered_by: str | None,
    service_date: date,
) -> bool:
    """Insert the request ``event`` registers, its timeline entry and the event (outbox); False,
    and nothing written, when its tracking code is already taken."""
    registered = event.data
    rows = await conn.fetch(
        _INSERT_REGISTERED,
        event.request_id,
        registered.tracking_code,
        registered.document_type.value,
        registered.channel,
        registered.applicant.name,
        registered.applicant.nik,
        registered.applicant.phone,
        registered.delivery.model_dump_json(),
        registered.cod_fee,
        json.dumps(registered.requirement_documents),
        event.correlation_id,
        idempotency_key,
        body_hash,
        intake_via,
        registered_by,
        service_date,
        event.event_id,
        event.event_type,
        event.occurred_at,
        json.dumps({"document_type": registered.document_type.value}),
        *queue_args([event], schema),
    )
    return bool(rows)


async def find_by_idempotency_key(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM requests WHERE idempotency_key = $1", key)


async def lock_applicant_document(conn: asyncpg.Connection, nik: str, document_type: str) -> None:
    """Serialise registrations of one (applicant, document type) until the transaction ends, so
    two at once cannot both see "nothing open" and both register."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"open:{nik}:{document_type}"
    )


_EARLIER = f"""
SELECT 'replay' AS found, request_id, tracking_code, status, applicant_phone, body_hash,
    document_type, cod_fee, requirement_documents, service_date, delivery
FROM requests WHERE idempotency_key = $1
UNION ALL
(SELECT 'open', request_id, tracking_code, status, applicant_phone, body_hash,
    document_type, cod_fee, requirement_documents, service_date, delivery
 FROM requests WHERE applicant_nik = $2 AND document_type = $3 AND {_OPEN}
 ORDER BY created_at LIMIT 1)
"""


async def find_replay_and_open(
    conn: asyncpg.Connection, idempotency_key: str | None, nik: str | None, document_type: str
) -> tuple[asyncpg.Record | None, asyncpg.Record | None]:
    """In one round trip: the request registered earlier with ``idempotency_key`` (a replay) and
    the oldest open request of (``nik``, ``document_type``). None skips a part (= NULL matches
    nothing)."""
    if idempotency_key is None and nik is None:
        return None, None
    found = {r["found"]: r for r in await conn.fetch(_EARLIER, idempotency_key, nik, document_type)}
    return found.get("replay"), found.get("open")


async def get_request(conn: asyncpg.Connection, request_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM requests WHERE request_id = $1", request_id)


async def find_by_tracking_code(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM requests WHERE tracking_code = $1", code)


async def list_requests(
    conn: asyncpg.Connection, *, status: str | None, tracking_code: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM requests WHERE ($1::text IS NULL OR status = $1)"
        " AND ($2::text IS NULL OR tracking_code = $2) ORDER BY created_at DESC LIMIT $3",
        status,
        tracking_code,
        limit,
    )


async def lock_statuses(
    conn: asyncpg.Connection, request_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Lock the requests and read their status; in request_id order, so that two transactions
    locking overlapping sets wait for each other instead of deadlocking (rows are locked in the
    order the sort returns them). Unknown ids are simply absent."""
    rows = await conn.fetch(
        "SELECT request_id, status FROM requests WHERE request_id = ANY($1::uuid[])"
        " ORDER BY request_id FOR UPDATE",
        list(request_ids),
    )
    return {r["request_id"]: r["status"] for r in rows}


async def update_statuses(
    conn: asyncpg.Connection, changes: Sequence[tuple[uuid.UUID, str, bool | None]]
) -> None:
    """(request_id, status, cod_paid) with one row per request (UPDATE ... FROM updates a row once
    even if it matches twice); cod_paid None keeps the flag. A terminal status keeps the first
    finished_at."""
    request_ids, statuses, cod_paid = zip(*changes, strict=True)
    await conn.execute(
        """
        UPDATE requests AS r SET
            status = u.status,
            cod_paid = coalesce(u.cod_paid, r.cod_paid),
            updated_at = now(),
            finished_at = CASE WHEN u.status = ANY($4::text[]) THEN coalesce(r.finished_at, now()) END
        FROM unnest($1::uuid[], $2::text[], $3::boolean[]) AS u(request_id, status, cod_paid)
        WHERE r.request_id = u.request_id
        """,
        request_ids,
        statuses,
        cod_paid,
        _TERMINAL,
    )


class TimelineRow(NamedTuple):
    request_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    detail: str  # JSON
    note: str | None


async def add_timeline_rows(conn: asyncpg.Connection, rows: Sequence[TimelineRow]) -> None:
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        """
        INSERT INTO request_timeline (request_id, event_id, event_type, occurred_at, detail, note)
        SELECT request_id, event_id, event_type, occurred_at, detail::jsonb, note
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
            WITH ORDINALITY AS t(request_id, event_id, event_type, occurred_at, detail, note, n)
        ORDER BY n  -- ids in the order given: the timeline's tie-break between equal times
        ON CONFLICT (event_id) DO NOTHING
        """,
        *columns,
    )


async def timeline(conn: asyncpg.Connection, request_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT event_type, occurred_at, detail, note FROM request_timeline"
        " WHERE request_id = $1 ORDER BY occurred_at, id",
        request_id,
    )


# ---- capacity ---------------------------------------------------------------------------------


async def take_capacity(
    conn: asyncpg.Connection, day: date, document_type: str, quota: int, enforce: bool
) -> bool:
    """Count one request on ``day``; when ``enforce``, only if the day still has room."""
    if enforce and quota <= 0:
        return False
    used = await conn.fetchval(
        """
        INSERT INTO daily_capacity AS d (service_date, document_type, used) VALUES ($1, $2, 1)
        ON CONFLICT (service_date, document_type) DO UPDATE SET used = d.used + 1
            WHERE NOT $4 OR d.used < $3
        RETURNING used
        """,
        day,
        document_type,
        quota,
        enforce,
    )
    return used is not None


async def used_between(
    conn: asyncpg.Connection, document_type: str | None, first: date, last: date
) -> dict[tuple[date, str], int]:
    rows = await conn.fetch(
        "SELECT service_date, document_type, used FROM daily_capacity"
        " WHERE service_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR document_type = $3)",
        first,
        last,
        document_type,
    )
    return {(r["service_date"], r["document_type"]): r["used"] for r in rows}
