"""The operators' print queue: list, claim (one job, or the next few), release, mark printed, reject.

Every action on one job reads the job, decides from what it finds, and writes in one statement that
changes the job only if its state and claim are still as read (compare-and-set), so two operators
racing for one job are served one after the other: the first wins, the second reads again and gets
a 409 that names the winner. The first action after this process claimed the job decides on
the claimed row instead of a read (``claimed_jobs.py``); a refusal is always decided on a read.
Every such action, refused ones too, is written to ``print_job_actions``. ``claim-next`` (the next
few free jobs) is one statement that locks the jobs it takes and skips those another statement
holds; each job it takes is recorded as a claim, and an empty answer records nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import topics
from shared.contracts.events import (
    DocumentPrinted,
    DocumentType,
    Envelope,
    RequestRejected,
    new_event,
)
from shared.http import Problem, request_id_of
from shared.logging import get_logger
from shared.outbox import queue_args, queue_cte, wake_relay
from shared.privacy import mask_nik

from .claimed_jobs import claimed_jobs
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


class ClaimNextBody(_In):
    operator: str | None = Operator
    limit: int = Field(default=10, ge=1, le=100)
    document_type: DocumentType | None = None


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
        # None once erased (retention.py)
        "applicant_nik": mask_nik(row["applicant_nik"]) if row["applicant_nik"] else None,
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

# What an action does once decided: the job's row as updated by ``_update`` (which recorded the
# action as done), or None when the action changes nothing (a no-op). Raises Problem to refuse.
Apply = Callable[[asyncpg.Connection, asyncpg.Record, Outcome], Awaitable[asyncpg.Record | None]]

_RECORD_ACTION = (
    "INSERT INTO print_job_actions (request_id, action, operator, outcome, detail)"
    " VALUES ($1, $2, $3, $4, $5)"
)


class _Raced(Exception):
    """The job changed between the read and the write (another operator's action came first)."""


# Read, decide, write: tried again while other actions on the same job keep coming first (a few
# milliseconds each); past that the operator is asked to try again (503) and nothing was changed.
ACT_ATTEMPTS = 20


async def _update(
    conn: asyncpg.Connection,
    read: asyncpg.Record,
    action: str,
    operator: str,
    assignments: str,
    *args: Any,
    event: Envelope[Any] | None = None,
    schema: str = "",
) -> asyncpg.Record:
    """Update the job if its state and claim are still those of ``read``, record the action as
    done and queue ``event`` (if any) in the outbox, in one statement; raise ``_Raced`` if the job
    changed since it was read. ``assignments`` (a constant of this module, never input) may use $3
    (the operator) and $4... (``args``)."""
    if event is not None and not schema:
        raise ValueError("an event needs the schema, to wake its outbox relay")
    n = 4 + len(args)
    queue = queue_cte(n + 3, only_if="job")
    row = await conn.fetchrow(
        f"WITH job AS (UPDATE print_jobs SET {assignments}, updated_at = now()"
        f" WHERE request_id = $1 AND (status, claimed_by, claimed_at)"
        f" IS NOT DISTINCT FROM (${n}::text, ${n + 1}::text, ${n + 2}::timestamptz)"
        " RETURNING *),"
        " done AS (INSERT INTO print_job_actions (request_id, action, operator, outcome)"
        f" SELECT request_id, $2, $3, 'done' FROM job), {queue}"
        " SELECT * FROM job",
        read["request_id"],
        action,
        operator,
        *args,
        read["status"],
        read["claimed_by"],
        read["claimed_at"],
        *queue_args([event] if event else []),
    )
    if row is None:
        raise _Raced
    if event is not None:
        wake_relay(schema)  # the statement was its own transaction: committed
    return row


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
    """Read the job, decide, apply, record the action; a refusal is recorded, then answered.

    Round trips, no explicit transaction: the read, then either the compare-and-set update with its
    action row in one statement (plus the outbox row when an event is due) or the action row alone
    (no-op, refusal). A refusal or no-op decided on the job as read stands as of that read. The
    first action after this process claimed the job decides on the kept claim instead of the read
    (``claimed_jobs.py``), and takes only a write from it: anything else is decided on a read.
    """
    ttl = _ttl(request)
    rt = request.app.state.rt
    # the job as this process's claim left it, if it claimed it: decided on without a read, and
    # only a write is taken from it (claimed_jobs.py)
    kept = claimed_jobs(rt).pop(request_id)
    async with rt.pool.acquire() as conn:
        for _ in range(ACT_ATTEMPTS):
            hint, kept = kept, None
            if hint is not None:
                row = hint
            else:
                row = await conn.fetchrow(
                    "SELECT * FROM print_jobs WHERE request_id = $1", request_id
                )
            if row is None:
                raise Problem(
                    404,
                    "Tugas cetak tidak ditemukan / Print job not found",
                    "Permohonan belum masuk antrean cetak"
                    " / the request is not in the print queue (yet)",
                )
            claim = Claim(row["claimed_by"], row["claimed_at"])
            problem: Problem | None = None
            updated: asyncpg.Record | None = None
            try:
                outcome = decide(row["status"], claim, action, operator, datetime.now(UTC), ttl)
                updated = await apply(conn, row, outcome)
            except _Raced:
                continue  # another action on this job came first: read and decide again
            except (ClaimedByAnother, UnsupportedStateTransition) as exc:
                problem = _refusal(exc)
            except Problem as exc:  # a refusal; a failed statement (a used number) changed nothing
                problem = exc
            if hint is not None and updated is None:
                continue  # refused or a no-op on the kept row: decide on a read, as ever
            if updated is not None:  # its statement recorded the action as done
                row = updated
            else:
                await conn.execute(
                    _RECORD_ACTION,
                    request_id,
                    action,
                    operator,
                    "refused" if problem else "no_op",
                    problem.detail or problem.title if problem else None,
                )
            break
        else:
            log.warning("print job action raced too long", request_id=str(request_id),
                        action=action, attempts=ACT_ATTEMPTS)
            raise Problem(503, "Sedang sibuk, coba lagi / Busy, please try again")
    if problem:
        raise problem
    return _job(row, ttl)


@router.post("/print-jobs/{request_id}/claim")
async def claim_job(request_id: uuid.UUID, body: ClaimBody, request: Request) -> Any:
    """Take a job so that no other operator prints it too (claiming again renews the lease)."""
    operator = operator_of(request, body.operator)

    async def apply(conn: asyncpg.Connection, row: asyncpg.Record, _: Outcome) -> asyncpg.Record:
        claimed = await _update(
            conn,
            row,
            "claim",
            operator,
            "status = 'claimed', claimed_by = $3, claimed_at = now()",
        )
        claimed_jobs(request.app.state.rt).keep(claimed)  # as claim-next's
        return claimed

    return await _act(request, request_id, "claim", operator, apply)


# The next free jobs, oldest registration first, claimed in one statement. Free is the rule
# ``domain.decide`` applies, written again here in SQL (the database's clock, as ``claimed_at`` is):
# queued, or claimed with a lease that has run out (``Claim.live``). SKIP LOCKED leaves the jobs
# another statement is changing to that statement; a job printed or claimed since this statement's
# snapshot is re-checked against the WHERE once locked (READ COMMITTED) and dropped, so two
# operators never get the same job. MATERIALIZED: the locking SELECT runs once, never inlined.
_CLAIM_NEXT = (
    "WITH picked AS MATERIALIZED (SELECT request_id FROM print_jobs"
    " WHERE (status = 'queued' OR (status = 'claimed' AND claimed_at <= now() - $2::interval))"
    " AND ($3::text IS NULL OR document_type = $3)"
    " ORDER BY registered_at, request_id LIMIT $4 FOR UPDATE SKIP LOCKED),"
    " job AS (UPDATE print_jobs p SET status = 'claimed', claimed_by = $1, claimed_at = now(),"
    " updated_at = now() FROM picked WHERE p.request_id = picked.request_id RETURNING p.*),"
    " done AS (INSERT INTO print_job_actions (request_id, action, operator, outcome)"
    " SELECT request_id, 'claim', $1, 'done' FROM job)"
    " SELECT * FROM job ORDER BY registered_at, request_id"
)


@router.post("/print-jobs/claim-next")
async def claim_next(body: ClaimNextBody, request: Request) -> Any:
    """Take the next ``limit`` free jobs of the queue (oldest first, optionally of one document
    type) for this operator: a stack to print. Fewer, or none, when the queue holds fewer; two
    operators asking at once get different jobs. One statement, whatever the number."""
    operator = operator_of(request, body.operator)
    ttl = _ttl(request)
    rt = request.app.state.rt
    rows = await rt.pool.fetch(_CLAIM_NEXT, operator, ttl, body.document_type, body.limit)
    kept = claimed_jobs(rt)
    for row in rows:
        kept.keep(row)  # the operator's next action on it skips its read
    if rows:
        log.info("jobs claimed", operator=operator, jobs=len(rows))
    return JSONResponse({"jobs": [_job(r, ttl) for r in rows]})


@router.post("/print-jobs/{request_id}/release")
async def release_job(request_id: uuid.UUID, body: ClaimBody, request: Request) -> Any:
    """Give a claimed job back to the queue."""
    operator = operator_of(request, body.operator)

    async def apply(
        conn: asyncpg.Connection, row: asyncpg.Record, out: Outcome
    ) -> asyncpg.Record | None:
        if not out.changed:
            return None
        return await _update(
            conn,
            row,
            "release",
            operator,
            "status = 'queued', claimed_by = NULL, claimed_at = NULL",
        )

    return await _act(request, request_id, "release", operator, apply)


@router.post("/print-jobs/{request_id}/printed")
async def mark_printed(request_id: uuid.UUID, body: PrintedBody, request: Request) -> Any:
    """Record the printed document's number (unique) and tell the courier it is ready."""
    rt = request.app.state.rt
    operator = operator_of(request, body.operator)

    async def apply(
        conn: asyncpg.Connection, row: asyncpg.Record, out: Outcome
    ) -> asyncpg.Record | None:
        if not out.changed:
            if row["document_number"] != body.document_number or row["operator"] != operator:
                raise Problem(
                    409,
                    "Sudah dicetak / Already printed",
                    f"Nomor dokumen {row['document_number']}, oleh {row['operator']}"
                    f" / number {row['document_number']}, by {row['operator']}",
                )
            return None  # the same mark sent again: a no-op
        printed_at = datetime.now(UTC)
        event = new_event(
            topics.DOCUMENT_PRINTED,
            request_id=request_id,
            correlation_id=row["correlation_id"],
            causation_id=request_id_of(request),
            producer="printing",
            occurred_at=printed_at,
            data=DocumentPrinted(
                document_number=body.document_number, printed_at=printed_at, operator=operator
            ),
        )
        try:
            row = await _update(
                conn,
                row,
                "print",
                operator,
                "status = 'printed', document_number = $4, printed_at = $5, operator = $3,"
                " claimed_by = $3, claimed_at = coalesce(claimed_at, $5)",
                body.document_number,
                printed_at,
                event=event,
                schema=rt.schema,
            )
        except asyncpg.UniqueViolationError:
            raise Problem(
                409,
                "Nomor dokumen sudah dipakai / Document number already used",
                "Setiap dokumen punya nomor unik / every document number is unique",
            ) from None
        log.info("document printed", request_id=str(request_id), operator=operator)
        return row

    return JSONResponse(await _act(request, request_id, "print", operator, apply))


@router.post("/print-jobs/{request_id}/reject")
async def reject_job(request_id: uuid.UUID, body: RejectBody, request: Request) -> Any:
    """Send the request back (missing or wrong requirement...): the applicant is told why."""
    rt = request.app.state.rt
    operator = operator_of(request, body.operator)

    async def apply(
        conn: asyncpg.Connection, row: asyncpg.Record, out: Outcome
    ) -> asyncpg.Record | None:
        if not out.changed:
            return None
        now = datetime.now(UTC)
        event = new_event(
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
        )
        return await _update(
            conn,
            row,
            "reject",
            operator,
            "status = 'rejected', reject_code = $4, reject_reason = $5, operator = $3,"
            " rejected_at = $6",
            body.reason_code,
            body.reason,
            now,
            event=event,
            schema=rt.schema,
        )

    return await _act(request, request_id, "reject", operator, apply)


@router.get("/reject-reasons")
async def reject_reasons() -> Any:
    """The categories an operator picks from; ``label`` is what the applicant reads."""
    return {"reasons": [{"code": c, "label": label} for c, label in REJECT_REASONS.items()]}
