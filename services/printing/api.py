"""The operators' print queue: list, claim, release, mark printed, reject.

Every action locks the job's row (``SELECT ... FOR UPDATE``) and decides from what it finds, so two
operators racing for one job are served one after the other: the first wins, the second gets a 409
that names the winner. Every action, refused ones too, is written to ``print_job_actions``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
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

from .domain import (
    REJECT_REASONS,
    Claim,
    ClaimedByAnother,
    Outcome,
    UnsupportedStateTransition,
    decide,
    rejection_text,
)
from .operators import operator_of

log = get_logger(__name__)
router = APIRouter(tags=["print queue"])

Operator = Field(default=None, min_length=1, max_length=100)
RejectCode = Literal[tuple(REJECT_REASONS)]  # type: ignore[valid-type]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ClaimBody(_In):
    operator: str | None = Operator


class PrintedBody(_In):
    document_number: str = Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z./\-]+$")
    operator: str | None = Operator


class RejectBody(_In):
    reason: str = Field(min_length=3, max_length=500)
    reason_code: RejectCode | None = None  # type: ignore[valid-type]
    operator: str | None = Operator


def _ttl(request: Request) -> timedelta:
    return timedelta(seconds=request.app.state.rt.settings.claim_ttl_s)


def _job(row: asyncpg.Record, ttl: timedelta) -> dict[str, Any]:
    claim = Claim(row["claimed_by"], row["claimed_at"])
    claimed = row["status"] == "claimed"
    expires = claim.expires_at(ttl) if claimed else None
    return {
        "request_id": str(row["request_id"]),
        "tracking_code": row["tracking_code"],
        "document_type": row["document_type"],
        "applicant_name": row["applicant_name"],
        "applicant_nik": mask_nik(row["applicant_nik"]),
        "status": row["status"],
        "claimed_by": row["claimed_by"],
        "claim_expires_at": expires.isoformat() if expires else None,
        "claim_expired": bool(claimed and not claim.live(datetime.now(UTC), ttl)),
        "document_number": row["document_number"],
        "operator": row["operator"],
        "registered_at": row["registered_at"].isoformat(),
        "printed_at": row["printed_at"].isoformat() if row["printed_at"] else None,
        "reject_code": row["reject_code"],
        "reject_reason": row["reject_reason"],
    }


ListStatus = Literal["queued", "claimed", "open", "printed", "rejected", "all"]
_STATUSES: dict[str, list[str] | None] = {
    "open": ["queued", "claimed"],  # what is still to be done
    "all": None,
}


@router.get("/print-jobs")
async def list_jobs(
    request: Request,
    status: ListStatus = "queued",
    document_type: str | None = None,
    claimed_by: str | None = None,
    tracking_code: str | None = None,
    registered_from: datetime | None = None,
    registered_to: datetime | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
) -> Any:
    """The queue, oldest registration first (first come, first served)."""
    statuses = _STATUSES.get(status, [status])
    rows = await request.app.state.rt.pool.fetch(
        "SELECT * FROM print_jobs WHERE ($1::text[] IS NULL OR status = ANY($1))"
        " AND ($2::text IS NULL OR document_type = $2)"
        " AND ($3::text IS NULL OR claimed_by = $3)"
        " AND ($4::text IS NULL OR tracking_code = $4)"
        " AND ($5::timestamptz IS NULL OR registered_at >= $5)"
        " AND ($6::timestamptz IS NULL OR registered_at < $6)"
        " ORDER BY registered_at, request_id LIMIT $7 OFFSET $8",
        statuses,
        document_type,
        claimed_by,
        tracking_code,
        registered_from,
        registered_to,
        limit,
        offset,
    )
    ttl = _ttl(request)
    return {"jobs": [_job(r, ttl) for r in rows], "limit": limit, "offset": offset}


@router.get("/print-jobs/{request_id}")
async def get_job(request_id: uuid.UUID, request: Request) -> Any:
    pool = request.app.state.rt.pool
    row = await pool.fetchrow("SELECT * FROM print_jobs WHERE request_id = $1", request_id)
    if row is None:
        raise Problem(404, "Tugas cetak tidak ditemukan / Print job not found")
    actions = await pool.fetch(
        "SELECT action, operator, outcome, detail, at FROM print_job_actions"
        " WHERE request_id = $1 ORDER BY id",
        request_id,
    )
    history = [{**dict(a), "at": a["at"].isoformat()} for a in actions]
    return {**_job(row, _ttl(request)), "history": history}


# --- actions ------------------------------------------------------------------------------------

Apply = Callable[[asyncpg.Connection, asyncpg.Record, Outcome], Awaitable[asyncpg.Record]]


def _refusal(exc: Exception) -> Problem:
    if isinstance(exc, ClaimedByAnother):
        return Problem(
            409,
            "Sudah diambil operator lain / Already claimed by another operator",
            f"Diambil oleh {exc.holder} sampai {exc.until.isoformat()}"
            f" / claimed by {exc.holder} until {exc.until.isoformat()}",
        )
    assert isinstance(exc, UnsupportedStateTransition)
    return Problem(
        409,
        "Status tugas cetak tidak mengizinkan ini / Not allowed in the job's state",
        f"Tugas berstatus {exc.current} / the job is {exc.current}: cannot {exc.action}",
    )


async def _act(
    request: Request, request_id: uuid.UUID, action: str, operator: str, apply: Apply
) -> dict[str, Any]:
    """Lock the job, decide, apply, record the action; a refusal is recorded, then answered."""
    ttl = _ttl(request)
    problem: Problem | None = None
    async with request.app.state.rt.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM print_jobs WHERE request_id = $1 FOR UPDATE", request_id
        )
        if row is None:
            raise Problem(
                404,
                "Tugas cetak tidak ditemukan / Print job not found",
                "Permohonan belum masuk antrean cetak / the request is not in the print queue (yet)",
            )
        claim = Claim(row["claimed_by"], row["claimed_at"])
        outcome: Outcome | None = None
        try:
            outcome = decide(row["status"], claim, action, operator, datetime.now(UTC), ttl)
            async with conn.transaction():  # a savepoint: a refused apply keeps the audit row
                row = await apply(conn, row, outcome)
        except (ClaimedByAnother, UnsupportedStateTransition) as exc:
            problem = _refusal(exc)
        except Problem as exc:
            problem = exc
        result = "refused" if problem or outcome is None else "done" if outcome.changed else "no_op"
        await conn.execute(
            "INSERT INTO print_job_actions (request_id, action, operator, outcome, detail)"
            " VALUES ($1, $2, $3, $4, $5)",
            request_id,
            action,
            operator,
            result,
            problem.detail or problem.title if problem else None,
        )
    if problem:
        raise problem
    return _job(row, ttl)


@router.post("/print-jobs/{request_id}/claim")
async def claim_job(request_id: uuid.UUID, body: ClaimBody, request: Request) -> Any:
    """Take a job so that no other operator prints it too (claiming again renews the lease)."""
    operator = operator_of(request, body.operator)

    async def apply(conn: asyncpg.Connection, row: asyncpg.Record, _: Outcome) -> asyncpg.Record:
        return await conn.fetchrow(
            "UPDATE print_jobs SET status = 'claimed', claimed_by = $2, claimed_at = now(),"
            " updated_at = now() WHERE request_id = $1 RETURNING *",
            request_id,
            operator,
        )

    return await _act(request, request_id, "claim", operator, apply)


@router.post("/print-jobs/{request_id}/release")
async def release_job(request_id: uuid.UUID, body: ClaimBody, request: Request) -> Any:
    """Give a claimed job back to the queue."""
    operator = operator_of(request, body.operator)

    async def apply(conn: asyncpg.Connection, row: asyncpg.Record, out: Outcome) -> asyncpg.Record:
        if not out.changed:
            return row
        return await conn.fetchrow(
            "UPDATE print_jobs SET status = 'queued', claimed_by = NULL, claimed_at = NULL,"
            " updated_at = now() WHERE request_id = $1 RETURNING *",
            request_id,
        )

    return await _act(request, request_id, "release", operator, apply)


@router.post("/print-jobs/{request_id}/printed")
async def mark_printed(request_id: uuid.UUID, body: PrintedBody, request: Request) -> Any:
    """Record the printed document's number (unique) and tell the courier it is ready."""
    rt = request.app.state.rt
    operator = operator_of(request, body.operator)

    async def apply(conn: asyncpg.Connection, row: asyncpg.Record, out: Outcome) -> asyncpg.Record:
        if not out.changed:
            if row["document_number"] != body.document_number or row["operator"] != operator:
                raise Problem(
                    409,
                    "Sudah dicetak / Already printed",
                    f"Nomor dokumen {row['document_number']}, oleh {row['operator']}"
                    f" / number {row['document_number']}, by {row['operator']}",
                )
            return row  # the same mark sent again: a no-op
        printed_at = datetime.now(UTC)
        try:
            row = await conn.fetchrow(
                "UPDATE print_jobs SET status = 'printed', document_number = $2, printed_at = $3,"
                " operator = $4, claimed_by = $4, claimed_at = coalesce(claimed_at, $3),"
                " updated_at = now() WHERE request_id = $1 RETURNING *",
                request_id,
                body.document_number,
                printed_at,
                operator,
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
                    document_number=body.document_number, printed_at=printed_at, operator=operator
                ),
            ),
            rt.schema,
        )
        log.info("document printed", request_id=str(request_id), operator=operator)
        return row

    return await _act(request, request_id, "print", operator, apply)


@router.post("/print-jobs/{request_id}/reject")
async def reject_job(request_id: uuid.UUID, body: RejectBody, request: Request) -> Any:
    """Send the request back (missing or wrong requirement...): the applicant is told why."""
    rt = request.app.state.rt
    operator = operator_of(request, body.operator)

    async def apply(conn: asyncpg.Connection, row: asyncpg.Record, out: Outcome) -> asyncpg.Record:
        if not out.changed:
            return row
        now = datetime.now(UTC)
        row = await conn.fetchrow(
            "UPDATE print_jobs SET status = 'rejected', reject_code = $2, reject_reason = $3,"
            " operator = $4, rejected_at = $5, updated_at = now() WHERE request_id = $1 RETURNING *",
            request_id,
            body.reason_code,
            body.reason,
            operator,
            now,
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
                data=RequestRejected(
                    reason=rejection_text(body.reason_code, body.reason),
                    rejected_at=now,
                    operator=operator,
                ),
            ),
            rt.schema,
        )
        return row

    return await _act(request, request_id, "reject", operator, apply)


@router.get("/reject-reasons")
async def reject_reasons() -> Any:
    """The categories an operator picks from; ``label`` is what the applicant reads."""
    return {"reasons": [{"code": c, "label": label} for c, label in REJECT_REASONS.items()]}
