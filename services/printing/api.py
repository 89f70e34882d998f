"""The operators' print queue: list, claim, mark printed, reject."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import topics
from shared.contracts.events import DocumentPrinted, RequestRejected, new_event
from shared.http import Problem, request_id_of
from shared.logging import get_logger
from shared.outbox import add_event
from shared.privacy import mask_nik

from .domain import UnsupportedStateTransition, transition

log = get_logger(__name__)
router = APIRouter(tags=["print queue"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ClaimBody(_In):
    operator: str = Field(min_length=1, max_length=100)


class PrintedBody(_In):
    document_number: str = Field(min_length=1, max_length=64)
    operator: str = Field(min_length=1, max_length=100)


class RejectBody(_In):
    reason: str = Field(min_length=3, max_length=500)
    operator: str = Field(min_length=1, max_length=100)


def _job(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "request_id": str(row["request_id"]),
        "tracking_code": row["tracking_code"],
        "document_type": row["document_type"],
        "applicant_name": row["applicant_name"],
        "applicant_nik": mask_nik(row["applicant_nik"]),
        "status": row["status"],
        "claimed_by": row["claimed_by"],
        "document_number": row["document_number"],
        "registered_at": row["registered_at"].isoformat(),
        "printed_at": row["printed_at"].isoformat() if row["printed_at"] else None,
        "reject_reason": row["reject_reason"],
    }


@router.get("/print-jobs")
async def list_jobs(
    request: Request,
    status: Literal["queued", "claimed", "printed", "rejected"] | None = "queued",
    document_type: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> Any:
    rt = request.app.state.rt
    rows = await rt.pool.fetch(
        "SELECT * FROM print_jobs WHERE ($1::text IS NULL OR status = $1)"
        " AND ($2::text IS NULL OR document_type = $2) ORDER BY registered_at LIMIT $3",
        status,
        document_type,
        limit,
    )
    return {"jobs": [_job(r) for r in rows]}


@router.get("/print-jobs/{request_id}")
async def get_job(request_id: uuid.UUID, request: Request) -> Any:
    row = await request.app.state.rt.pool.fetchrow(
        "SELECT * FROM print_jobs WHERE request_id = $1", request_id
    )
    if row is None:
        raise Problem(404, "Tugas cetak tidak ditemukan / Print job not found")
    return _job(row)


async def _locked_job(conn: asyncpg.Connection, request_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM print_jobs WHERE request_id = $1 FOR UPDATE", request_id)
    if row is None:
        raise Problem(
            404,
            "Tugas cetak tidak ditemukan / Print job not found",
            "Permohonan belum masuk antrean cetak / the request is not in the print queue (yet)",
        )
    return row


def _conflict(exc: UnsupportedStateTransition) -> Problem:
    return Problem(
        409,
        "Status tugas cetak tidak mengizinkan ini / Not allowed in the job's state",
        f"Tugas berstatus {exc.current} / the job is {exc.current}: cannot {exc.action}",
    )


@router.post("/print-jobs/{request_id}/claim")
async def claim_job(request_id: uuid.UUID, body: ClaimBody, request: Request) -> Any:
    """Take a job so that no other operator prints it too."""
    async with request.app.state.rt.pool.acquire() as conn, conn.transaction():
        row = await _locked_job(conn, request_id)
        if row["status"] == "claimed" and row["claimed_by"] != body.operator:
            raise Problem(
                409,
                "Sudah diambil operator lain / Already claimed by another operator",
                f"Diambil oleh {row['claimed_by']} / claimed by {row['claimed_by']}",
            )
        try:
            transition(row["status"], "claim")
        except UnsupportedStateTransition as exc:
            raise _conflict(exc) from None
        row = await conn.fetchrow(
            "UPDATE print_jobs SET status = 'claimed', claimed_by = $2, claimed_at = now(),"
            " updated_at = now() WHERE request_id = $1 RETURNING *",
            request_id,
            body.operator,
        )
    return _job(row)


@router.post("/print-jobs/{request_id}/printed")
async def mark_printed(request_id: uuid.UUID, body: PrintedBody, request: Request) -> Any:
    rt = request.app.state.rt
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await _locked_job(conn, request_id)
        if row["status"] == "claimed" and row["claimed_by"] != body.operator:
            raise Problem(409, "Sudah diambil operator lain / Claimed by another operator")
        try:
            outcome = transition(row["status"], "print")
        except UnsupportedStateTransition as exc:
            raise _conflict(exc) from None
        if not outcome.changed:
            if row["document_number"] != body.document_number:
                raise Problem(
                    409,
                    "Sudah dicetak dengan nomor lain / Already printed with another number",
                    f"Nomor dokumen {row['document_number']}",
                )
            return _job(row)
        printed_at = datetime.now(UTC)
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE print_jobs SET status = 'printed', document_number = $2,"
                    " printed_at = $3, operator = $4, updated_at = now()"
                    " WHERE request_id = $1 RETURNING *",
                    request_id,
                    body.document_number,
                    printed_at,
                    body.operator,
                )
        except asyncpg.UniqueViolationError:
            raise Problem(
                409,
                "Nomor dokumen sudah dipakai / Document number already used",
                "Setiap dokumen punya nomor unik / every document number is unique",
            ) from None
        await add_event(
            conn,
            new_event(
                topics.DOCUMENT_PRINTED,
                request_id=request_id,
                correlation_id=row["correlation_id"],
                causation_id=request_id_of(request),
                producer="printing",
                occurred_at=printed_at,
                data=DocumentPrinted(
                    document_number=body.document_number, printed_at=printed_at, operator=body.operator
                ),
            ),
            rt.schema,
        )
    log.info("document printed", request_id=str(request_id), correlation_id=row["correlation_id"])
    return _job(row)


@router.post("/print-jobs/{request_id}/reject")
async def reject_job(request_id: uuid.UUID, body: RejectBody, request: Request) -> Any:
    rt = request.app.state.rt
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await _locked_job(conn, request_id)
        try:
            outcome = transition(row["status"], "reject")
        except UnsupportedStateTransition as exc:
            raise _conflict(exc) from None
        if not outcome.changed:
            return _job(row)
        now = datetime.now(UTC)
        row = await conn.fetchrow(
            "UPDATE print_jobs SET status = 'rejected', reject_reason = $2, operator = $3,"
            " updated_at = now() WHERE request_id = $1 RETURNING *",
            request_id,
            body.reason,
            body.operator,
        )
        await add_event(
            conn,
            new_event(
                topics.REQUEST_REJECTED,
                request_id=request_id,
                correlation_id=row["correlation_id"],
                causation_id=request_id_of(request),
                producer="printing",
                occurred_at=now,
                data=RequestRejected(reason=body.reason, rejected_at=now, operator=body.operator),
            ),
            rt.schema,
        )
    return _job(row)
