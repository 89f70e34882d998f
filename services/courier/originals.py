"""The originals (requirement documents) collected at the door, until the office has them.

A delivery with ``documents_collected`` starts the return leg: the originals are ``with_courier``
and due at the office ``originals_return_days`` after the delivery. The office confirms receipt
(naming anything missing); until then they are outstanding, and overdue past their due date.
Every step is kept in ``originals_custody`` (the chain of custody).

    GET  /originals?status=outstanding|overdue|attention|received|all[&partner=jnt]
    GET  /originals/{request_id}
    POST /originals/{request_id}/received   {"received_by": "...", "missing": [...], "note": "..."}
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shared.db.pool import Pool
from shared.http import Problem
from shared.logging import get_logger

from .api import shipment_or_404
from .domain import (
    ORIGINALS_ATTENTION,
    ORIGINALS_OUTSTANDING,
    originals_after_receipt,
    originals_overdue,
)

log = get_logger(__name__)
router = APIRouter(tags=["originals"])

# What the office may confirm receipt of: outstanding ones, ones the courier said it did not
# collect (the applicant brought them in), and the rest of an incomplete receipt.
_RECEIVABLE = ORIGINALS_OUTSTANDING | {"not_collected", "received_incomplete"}


def _view(row: asyncpg.Record, now: datetime) -> dict[str, Any]:
    due = row["originals_due_at"]
    overdue = originals_overdue(row["originals_status"], due, now)
    return {
        "request_id": str(row["request_id"]),
        "partner": row["partner"],
        "waybill": row["waybill"],
        "status": row["originals_status"],
        "requirement_documents": json.loads(row["requirement_documents"] or "[]"),
        "missing": json.loads(row["originals_missing"]) if row["originals_missing"] else [],
        "delivered_at": row["delivered_at"].isoformat() if row["delivered_at"] else None,
        "due_at": due.isoformat() if due else None,
        "overdue": overdue,
        "overdue_days": round((now - due).total_seconds() / 86400, 1) if overdue else None,
        "received_at": row["originals_received_at"].isoformat()
        if row["originals_received_at"] else None,
        "received_by": row["originals_received_by"],
    }


@router.get("/originals")
async def list_originals(
    request: Request,
    status: Literal["outstanding", "overdue", "attention", "received", "all"] = "outstanding",
    partner: Literal["jnt", "pos"] | None = None,
    limit: int = Query(200, ge=1, le=1000),
) -> Any:
    """``outstanding``: still owed to the office; ``overdue``: past their due date;
    ``attention``: overdue, not collected at the door, or received with something missing."""
    now = datetime.now(UTC)
    wanted = {
        "outstanding": sorted(ORIGINALS_OUTSTANDING),
        "overdue": sorted(ORIGINALS_OUTSTANDING),
        "attention": sorted(ORIGINALS_OUTSTANDING | ORIGINALS_ATTENTION),
        "received": ["received", "received_incomplete"],
        "all": None,
    }[status]
    rows = await request.app.state.rt.pool.fetch(
        "SELECT * FROM shipments WHERE ($1::text[] IS NULL OR originals_status = ANY($1))"
        " AND originals_status NOT IN ('awaiting_delivery', 'none')"
        " AND ($2::text IS NULL OR partner = $2)"
        " AND ($3::bool IS NOT TRUE OR originals_due_at < now())"
        " ORDER BY originals_due_at NULLS LAST, request_id LIMIT $4",
        wanted,
        partner,
        status == "overdue",
        limit,
    )
    views = [_view(r, now) for r in rows]
    if status == "attention":
        views = [v for v in views if v["overdue"] or v["status"] in ORIGINALS_ATTENTION]
    return {"originals": views, "overdue": sum(v["overdue"] for v in views)}


@router.get("/originals/{request_id}")
async def get_originals(request_id: uuid.UUID, request: Request) -> Any:
    pool = request.app.state.rt.pool
    row = await shipment_or_404(pool, request_id)
    return {**_view(row, datetime.now(UTC)), "custody": await _custody(pool, request_id)}


async def _custody(conn: Pool | asyncpg.Connection, request_id: uuid.UUID) -> list[Any]:
    rows = await conn.fetch(
        "SELECT step, actor, detail, at FROM originals_custody WHERE request_id = $1 ORDER BY id",
        request_id,
    )
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]


class ReceiptBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    received_by: str = Field(min_length=1, max_length=100)
    missing: list[str] = Field(default_factory=list, max_length=20)
    note: str | None = Field(default=None, max_length=500)


@router.post("/originals/{request_id}/received")
async def confirm_received(request_id: uuid.UUID, body: ReceiptBody, request: Request) -> Any:
    """The office has the originals (``missing``: the ones that did not come back)."""
    async with request.app.state.rt.pool.acquire() as conn, conn.transaction():
        row = await shipment_or_404(conn, request_id, for_update=True)
        required = json.loads(row["requirement_documents"] or "[]")
        unknown = [m for m in body.missing if m not in required]
        if unknown:
            raise Problem(422, "Data tidak valid / Invalid data",
                          f"Bukan berkas persyaratan permohonan ini / not required here: {unknown}",
                          [{"field": "missing", "message": f"one of {required}"}])
        status = row["originals_status"]
        if status == "received" and not body.missing:
            return {**_view(row, datetime.now(UTC)), "custody": await _custody(conn, request_id)}
        if status not in _RECEIVABLE:
            raise Problem(409, "Berkas asli belum/tidak dikirim / No originals on their way",
                          f"Status berkas asli: {status} / the originals are {status}")
        row = await conn.fetchrow(
            "UPDATE shipments SET originals_status = $2, originals_received_at = now(),"
            " originals_received_by = $3, originals_missing = $4::jsonb, updated_at = now()"
            " WHERE request_id = $1 RETURNING *",
            request_id,
            originals_after_receipt(body.missing),
            body.received_by,
            json.dumps(body.missing),
        )
        detail = "; ".join(filter(None, [
            f"tidak ada / missing: {', '.join(body.missing)}" if body.missing else "lengkap",
            body.note,
        ]))
        await conn.execute(
            "INSERT INTO originals_custody (request_id, step, actor, detail)"
            " VALUES ($1, 'received_at_office', $2, $3)",
            request_id,
            body.received_by,
            detail,
        )
        custody = await _custody(conn, request_id)
    log.info("originals received", request_id=str(request_id), missing=len(body.missing))
    return {**_view(row, datetime.now(UTC)), "custody": custody}
