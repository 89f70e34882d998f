"""SQL for intake's own tables (schema ``intake``)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from shared.contracts.events import RequestRegistered


async def insert_request(
    conn: asyncpg.Connection,
    *,
    request_id: uuid.UUID,
    registered: RequestRegistered,
    correlation_id: str,
    idempotency_key: str | None,
    body_hash: str | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO requests (request_id, tracking_code, document_type, channel, applicant_name,
            applicant_nik, applicant_phone, delivery, cod_fee, requirement_documents, status,
            correlation_id, idempotency_key, body_hash)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::jsonb, 'registered', $11, $12, $13)
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
    )


async def find_by_idempotency_key(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM requests WHERE idempotency_key = $1", key)


async def find_open_duplicate(
    conn: asyncpg.Connection, nik: str, document_type: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT request_id, tracking_code, status FROM requests"
        " WHERE applicant_nik = $1 AND document_type = $2"
        " AND status NOT IN ('delivered', 'returned_to_office', 'rejected') LIMIT 1",
        nik,
        document_type,
    )


async def get_request(conn: asyncpg.Connection, request_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM requests WHERE request_id = $1", request_id)


async def lock_status(conn: asyncpg.Connection, request_id: uuid.UUID) -> str | None:
    return await conn.fetchval(
        "SELECT status FROM requests WHERE request_id = $1 FOR UPDATE", request_id
    )


async def update_status(
    conn: asyncpg.Connection, request_id: uuid.UUID, status: str, cod_paid: bool | None
) -> None:
    await conn.execute(
        "UPDATE requests SET status = $2, cod_paid = coalesce($3, cod_paid), updated_at = now()"
        " WHERE request_id = $1",
        request_id,
        status,
        cod_paid,
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
