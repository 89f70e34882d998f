"""SQL for intake's requests, their timeline and the daily capacity (schema ``intake``)."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from typing import Any

import asyncpg

from shared.contracts.events import RequestRegistered

from .domain import TERMINAL

_OPEN = "status NOT IN ('delivered', 'returned_to_office', 'rejected')"
_TERMINAL = sorted(TERMINAL)


async def insert_request(
    conn: asyncpg.Connection,
    *,
    request_id: uuid.UUID,
    registered: RequestRegistered,
    correlation_id: str,
    idempotency_key: str | None,
    body_hash: str | None,
    intake_via: str,
    registered_by: str | None,
    service_date: date,
) -> None:
    await conn.execute(
        """
        INSERT INTO requests (request_id, tracking_code, document_type, channel, applicant_name,
            applicant_nik, applicant_phone, delivery, cod_fee, requirement_documents, status,
            correlation_id, idempotency_key, body_hash, phone_last4, intake_via, registered_by,
            service_date)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::jsonb, 'registered', $11, $12, $13,
            right($7, 4), $14, $15, $16)
        """,
        request_id,
        registered.tracking_code,
        registered.document_type.value,
        registered.channel,
        registered.applicant.name,
        registered.applicant.nik,
        registered.applicant.phone,
        registered.delivery.model_dump_json(),
        registered.cod_fee,
        json.dumps(registered.requirement_documents),
        correlation_id,
        idempotency_key,
        body_hash,
        intake_via,
        registered_by,
        service_date,
    )


async def find_by_idempotency_key(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM requests WHERE idempotency_key = $1", key)


async def lock_applicant_document(conn: asyncpg.Connection, nik: str, document_type: str) -> None:
    """Serialise registrations of one (applicant, document type) until the transaction ends, so
    two at once cannot both see "nothing open" and both register."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"open:{nik}:{document_type}"
    )


async def find_open_duplicate(
    conn: asyncpg.Connection, nik: str, document_type: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT request_id, tracking_code, status, applicant_phone FROM requests"
        f" WHERE applicant_nik = $1 AND document_type = $2 AND {_OPEN}"
        " ORDER BY created_at LIMIT 1",
        nik,
        document_type,
    )


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


async def lock_status(conn: asyncpg.Connection, request_id: uuid.UUID) -> str | None:
    return await conn.fetchval(
        "SELECT status FROM requests WHERE request_id = $1 FOR UPDATE", request_id
    )


async def update_status(
    conn: asyncpg.Connection, request_id: uuid.UUID, status: str, cod_paid: bool | None
) -> None:
    await conn.execute(
        "UPDATE requests SET status = $2, cod_paid = coalesce($3, cod_paid), updated_at = now(),"
        " finished_at = CASE WHEN $2 = ANY($4::text[]) THEN coalesce(finished_at, now()) END"
        " WHERE request_id = $1",
        request_id,
        status,
        cod_paid,
        _TERMINAL,
    )


async def add_timeline(
    conn: asyncpg.Connection,
    *,
    request_id: uuid.UUID,
    event_id: uuid.UUID,
    event_type: str,
    occurred_at: datetime,
    detail: dict[str, Any],
    note: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO request_timeline (request_id, event_id, event_type, occurred_at, detail, note)"
        " VALUES ($1, $2, $3, $4, $5::jsonb, $6) ON CONFLICT (event_id) DO NOTHING",
        request_id,
        event_id,
        event_type,
        occurred_at,
        json.dumps(detail),
        note,
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


# ---- retention --------------------------------------------------------------------------------


async def erase_personal_data(conn: asyncpg.Connection, finished_before: datetime, limit: int) -> int:
    """Blank the applicant's data of requests finished before the cut-off; keep the lifecycle
    (status, timeline, document type, partner, fee, service date, last 4 phone digits)."""
    result = await conn.execute(
        """
        UPDATE requests SET
            applicant_name = NULL, applicant_nik = NULL, applicant_phone = NULL,
            delivery = jsonb_build_object('partner', delivery->'partner'),
            idempotency_key = NULL, body_hash = NULL,
            personal_data_erased_at = now(), updated_at = now()
        WHERE request_id IN (
            SELECT request_id FROM requests
            WHERE finished_at < $1 AND personal_data_erased_at IS NULL
            ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
        """,
        finished_before,
        limit,
    )
    return int(result.split()[-1])
