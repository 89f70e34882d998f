"""SQL for intake's requests, their timeline and the daily capacity (schema ``intake``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from datetime import date, datetime
from typing import NamedTuple

import asyncpg

from shared.contracts.events import Envelope, RequestRegistered
from shared.outbox import queue_args

from .domain import TERMINAL

_TERMINAL = sorted(TERMINAL)


class Registration(NamedTuple):
    """What ``register_request`` did: ``outcome`` is ``registered``, ``replay`` (``earlier`` is the
    request registered with the Idempotency-Key), ``open`` (``earlier`` is the applicant's open
    request of that document type), ``quota_full`` or ``tracking_code_taken`` (the drawn code is an
    earlier request's)."""

    outcome: str
    earlier: asyncpg.Record | None


_REGISTER = "SELECT * FROM register_request(" + ", ".join(f"${i}" for i in range(1, 30)) + ")"


async def register_request(
    conn: asyncpg.Connection,
    *,
    event: Envelope[RequestRegistered],
    idempotency_key: str | None,
    open_nik: str | None,
    body_hash: str | None,
    intake_via: str,
    registered_by: str | None,
    service_date: date,
    quota: int,
    enforce_quota: bool,
) -> Registration:
    """One call (migration ``0005_register_without_notify.sql``): under a lock on the applicant and
    document type, look up the replay and the open request (``open_nik`` None: not that one),
    take a place in the day's capacity, and write the request ``event`` registers, its first
    timeline entry and the event (outbox). An Idempotency-Key taken meanwhile by another applicant
    or document raises ``asyncpg.UniqueViolationError``; nothing is written unless the outcome is
    ``registered``. One statement; inside the caller's transaction if there is one. The caller
    wakes the outbox relay once the registration has committed (``shared.outbox.wake_relay``)."""
    registered = event.data
    document_type = registered.document_type.value
    row = await conn.fetchrow(
        _REGISTER,
        f"open:{registered.applicant.nik}:{document_type}",
        idempotency_key,
        open_nik,
        document_type,
        service_date,
        quota,
        enforce_quota,
        event.request_id,
        registered.tracking_code,
        registered.channel,
        registered.applicant.name,
        registered.applicant.nik,
        registered.applicant.phone,
        registered.delivery.model_dump_json(),
        registered.cod_fee,
        json.dumps(registered.requirement_documents),
        event.correlation_id,
        body_hash,
        intake_via,
        registered_by,
        event.event_id,
        event.event_type,
        event.occurred_at,
        json.dumps({"document_type": document_type}),
        *queue_args([event]),
    )
    assert row is not None  # the function always answers one row
    outcome = row["outcome"]
    return Registration(outcome, row if outcome in ("replay", "open") else None)


async def find_by_idempotency_key(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM requests WHERE idempotency_key = $1", key)


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
