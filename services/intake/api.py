"""Intake's HTTP surface for applicants (the web form) and operators.

Public: ``POST /requests``. Operators (``Authorization: Bearer``): ``POST /operator/requests``
(walk-in and phone applicants), ``GET /requests/{id}`` (with the applicant's data; each read is
recorded), ``GET /operator/requests``, ``GET /operator/capacity``; supervisors also
``POST /operator/retention/run``. Public tracking lives in ``tracking.py``, WhatsApp in
``whatsapp.py``. Web registration is shed with a 429 while the pipeline is behind
(``shedding.py``).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from shared.contracts.events import DocumentType
from shared.contracts.money import format_rupiah
from shared.http import Problem, request_id_of
from shared.logging import get_logger
from shared.privacy import mask_nik, mask_phone

from . import capacity, ratelimit, registration, repository, retention
from .auth import ANY_OPERATOR, SUPERVISOR, Operator, record_access
from .domain import ABOUT_ANOTHER_PERSON, DOCUMENT_NAMES, STATUS_LABELS
from .inputs import OperatorRegistrationIn, RegistrationIn
from .ratelimit import Limit
from .registration import (
    Caller,
    DailyQuotaFull,
    IdempotencyKeyReused,
    OpenRequestExists,
    Registered,
    RegistrationRefused,
)
from .settings import IntakeSettings
from .shedding import refuse_if_overloaded
from .validation import normalize_tracking_code

log = get_logger(__name__)
router = APIRouter(tags=["requests"])

IdempotencyKey = Annotated[
    str | None,
    Header(description="Any 1-255 visible ASCII characters; the same key and body answer the same"),
]


def _check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not (1 <= len(key) <= 255 and all(0x21 <= ord(c) <= 0x7E for c in key)):
        raise Problem(
            400,
            "Idempotency-Key tidak sah / Invalid Idempotency-Key",
            "1-255 karakter ASCII tanpa spasi / 1-255 visible ASCII characters",
            errors=[{"field": "Idempotency-Key", "message": "1-255 visible ASCII", "code": "header"}],
        )
    return key


def refusal_problem(refused: RegistrationRefused, settings: IntakeSettings) -> Problem:
    """A refused registration as the problem a web client or operator can act on."""
    if isinstance(refused, IdempotencyKeyReused):
        return Problem(
            409,
            "Idempotency-Key sudah dipakai untuk data lain / Idempotency-Key reused with another body",
            "Gunakan kunci baru untuk permohonan baru / use a new key for a new request",
            extra={"code": refused.code},
        )
    if isinstance(refused, OpenRequestExists):
        if refused.same_phone:
            label = STATUS_LABELS.get(refused.status, refused.status)
            detail = (
                f"Kode lacak {refused.tracking_code}, status: {label}. Tunggu sampai selesai"
                f" / tracking code {refused.tracking_code}, status {refused.status}: wait until"
                " it is finished."
            )
            extra = {"code": refused.code, "tracking_code": refused.tracking_code,
                     "request_status": refused.status}  # fmt: skip
        else:
            # The caller knows the NIK but not the phone on file: tell them nothing more.
            detail = (
                "Lihat pesan WhatsApp pemohon atau hubungi kantor Dukcapil"
                " / see the applicant's WhatsApp messages or contact the office."
            )
            extra = {"code": refused.code}
        return Problem(
            409, "Permohonan yang sama masih diproses / The same request is still open",
            detail, extra=extra,
        )  # fmt: skip
    if isinstance(refused, DailyQuotaFull):
        extra: dict[str, Any] = {"code": refused.code, "service_date": refused.day.isoformat()}
        headers = None
        if refused.next_day:
            extra["next_available_date"] = refused.next_day.isoformat()
            detail = (
                f"Silakan daftar lagi pada {capacity.format_day(refused.next_day)}"
                f" / please register again on {refused.next_day.isoformat()}"
            )
            opens = datetime.combine(refused.next_day, time(0), settings.zone)
            wait = max(1, int((opens - datetime.now(UTC)).total_seconds()))
            headers = {"Retry-After": str(wait)}
        else:
            detail = (
                f"Belum ada kuota dalam {settings.quota_horizon_days} hari ke depan, hubungi kantor"
                f" / no room in the next {settings.quota_horizon_days} days, contact the office"
            )
        return Problem(
            409, "Kuota harian penuh / Daily quota reached", detail, headers=headers, extra=extra
        )
    raise refused


async def _register(
    request: Request, body: RegistrationIn | OperatorRegistrationIn, caller: Caller,
    idempotency_key: str | None,
) -> JSONResponse:  # fmt: skip
    rt = request.app.state.rt
    async with rt.pool.acquire() as conn:
        try:
            done = await registration.register(
                conn,
                settings=rt.settings,
                schema=rt.schema,
                body=body,
                caller=caller,
                idempotency_key=_check_idempotency_key(idempotency_key),
            )
        except RegistrationRefused as refused:
            raise refusal_problem(refused, rt.settings) from None
    if not done.replayed:
        log.info(
            "request registered",
            request_id=str(done.request_id),
            correlation_id=str(done.request_id),
            document_type=done.document_type.value,
            intake_via=caller.intake_via,
            operator=caller.operator_id,
            nik=mask_nik(body.applicant.nik),
            phone=mask_phone(body.applicant.phone),
        )
    headers = {"Location": f"/requests/{done.request_id}"}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(_answer(done, rt.settings), status_code=201, headers=headers)


def _answer(done: Registered, settings: IntakeSettings) -> dict[str, Any]:
    return done.answer() | {
        "cod_fee_display": format_rupiah(done.cod_fee),
        "tracking_url": f"{settings.public_base_url.rstrip('/')}/lacak?kode={done.tracking_code}",
    }


# Load shedding first (shedding.py): while the pipeline is behind, a registration is refused with
# 429 + Retry-After before its body is validated or the database is asked anything.
SHED = [Depends(refuse_if_overloaded)]


@router.post("/requests", status_code=201, dependencies=SHED)
async def register_request(
    body: RegistrationIn, request: Request, idempotency_key: IdempotencyKey = None
) -> Any:
    """An applicant's request from the web form (channel ``web``)."""
    await _limit_registrations(request)
    caller = Caller(channel="web", intake_via="web", causation_id=request_id_of(request))
    return await _register(request, body, caller, idempotency_key)


async def _limit_registrations(request: Request) -> None:
    rt = request.app.state.rt
    settings: IntakeSettings = rt.settings
    if not settings.registration_max_per_client_hour:
        return
    now, window = datetime.now(UTC), 3600
    limit = Limit(f"register:{ratelimit.client_of(request, settings)}",
                  settings.registration_max_per_client_hour)  # fmt: skip
    async with rt.pool.acquire() as conn:
        if await ratelimit.exceeded(conn, [limit], window, now):
            raise ratelimit.too_many(ratelimit.seconds_left(now, window),
                                     "Terlalu banyak pendaftaran / Too many registrations")
        await ratelimit.hit(conn, limit.bucket, window, now)


# Not shed: the applicant is standing at the counter, and counter volume is bounded by the staff.
@router.post("/operator/requests", status_code=201, tags=["operators"])
async def register_on_behalf(
    body: OperatorRegistrationIn,
    request: Request,
    operator: Annotated[Operator, Depends(ANY_OPERATOR)],
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """An operator registers for a walk-in or phone applicant (channel ``counter``, no quota)."""
    if body.another_person and body.document_type not in ABOUT_ANOTHER_PERSON:
        allowed = ", ".join(sorted(d.value for d in ABOUT_ANOTHER_PERSON))
        raise Problem(
            422,
            "Data tidak valid / Invalid data",
            "Periksa kolom berikut / Check these fields",
            errors=[{
                "field": "another_person",
                "message": f"hanya untuk / only for {allowed}",
                "code": "value_error",
            }],
        )  # fmt: skip
    caller = Caller(
        channel="counter",
        intake_via=body.via,
        operator_id=operator.operator_id,
        causation_id=request_id_of(request),
    )
    return await _register(request, body, caller, idempotency_key)


def _timeline(events: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [
        {
            "event": e["event_type"],
            "occurred_at": e["occurred_at"].isoformat(),
            "detail": json.loads(e["detail"]),
            **({"note": e["note"]} if e["note"] else {}),
        }
        for e in events
    ]


@router.get("/requests/{request_id}", tags=["operators"])
async def get_request(
    request_id: uuid.UUID, request: Request, operator: Annotated[Operator, Depends(ANY_OPERATOR)]
) -> Any:
    """The whole request with the applicant's data, for operators; the read is recorded."""
    rt = request.app.state.rt
    async with rt.pool.acquire() as conn:
        row = await repository.get_request(conn, request_id)
        if row is None:
            raise Problem(404, "Permohonan tidak ditemukan / Request not found")
        events = await repository.timeline(conn, request_id)
        erased = row["personal_data_erased_at"] is not None
        if not erased:
            await record_access(conn, operator, request_id, "read")
    delivery = json.loads(row["delivery"])
    return {
        **_summary(row),
        "correlation_id": row["correlation_id"],
        "requirement_documents": json.loads(row["requirement_documents"]),
        "applicant": None if erased else {
            "name": row["applicant_name"],
            "nik": row["applicant_nik"],
            "phone": row["applicant_phone"],
        },
        "delivery": delivery,
        "personal_data_erased_at": row["personal_data_erased_at"].isoformat() if erased else None,
        "timeline": _timeline(events),
    }  # fmt: skip


def _summary(row: asyncpg.Record) -> dict[str, Any]:
    delivery = json.loads(row["delivery"])
    return {
        "request_id": str(row["request_id"]),
        "tracking_code": row["tracking_code"],
        "document_type": row["document_type"],
        "channel": row["channel"],
        "intake_via": row["intake_via"],
        "registered_by": row["registered_by"],
        "status": row["status"],
        "status_label": STATUS_LABELS.get(row["status"], row["status"]),
        "cod_paid": row["cod_paid"],
        "cod_fee": row["cod_fee"],
        "partner": delivery["partner"],
        "service_date": row["service_date"].isoformat(),
        "registered_at": row["created_at"].isoformat(),
    }


@router.get("/operator/requests", tags=["operators"])
async def list_requests(
    request: Request,
    operator: Annotated[Operator, Depends(ANY_OPERATOR)],
    status: Annotated[str | None, Query(max_length=40)] = None,
    tracking_code: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    """Newest first, masked: open one request to see the applicant's data."""
    code = normalize_tracking_code(tracking_code) if tracking_code else None
    if tracking_code and code is None:
        return {"requests": []}
    async with request.app.state.rt.pool.acquire() as conn:
        rows = await repository.list_requests(conn, status=status, tracking_code=code, limit=limit)
    return {
        "requests": [
            _summary(r)
            | {
                "applicant_nik": mask_nik(r["applicant_nik"]) if r["applicant_nik"] else None,
                "applicant_phone": mask_phone(r["applicant_phone"])
                if r["applicant_phone"]
                else None,
            }
            for r in rows
        ]
    }


@router.get("/operator/capacity", tags=["operators"])
async def capacity_of_day(
    request: Request,
    operator: Annotated[Operator, Depends(ANY_OPERATOR)],
    day: Annotated[date | None, Query(alias="date")] = None,
) -> Any:
    """Quota and requests taken per document type on a day (today by default)."""
    rt = request.app.state.rt
    settings: IntakeSettings = rt.settings
    day = day or capacity.office_today(datetime.now(UTC), settings.zone)
    async with rt.pool.acquire() as conn:
        used = await repository.used_between(conn, None, day, day)
    types = []
    for doc in DocumentType:
        quota = registration.quota_of(settings, doc, day)
        taken = used.get((day, doc.value), 0)
        types.append({"document_type": doc.value, "name": DOCUMENT_NAMES[doc], "quota": quota,
                      "used": taken, "room": max(0, quota - taken)})  # fmt: skip
    return {"date": day.isoformat(), "timezone": settings.office_timezone, "types": types}


@router.post("/operator/retention/run", tags=["operators"])
async def run_retention(
    request: Request, operator: Annotated[Operator, Depends(SUPERVISOR)],
    older_than_days: Annotated[float | None, Query(ge=0)] = None,
) -> Any:  # fmt: skip
    """Run the retention job now (supervisors); ``older_than_days`` overrides the setting once."""
    rt = request.app.state.rt
    report = await retention.run_once(rt.pool, rt.settings, retention_days=older_than_days)
    log.info("retention run on demand", operator=operator.operator_id, **report)
    return report

