"""Intake's HTTP surface: register a request, read its status."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.contracts import topics
from shared.contracts.events import (
    Address,
    Applicant,
    Channel,
    Delivery,
    DocumentType,
    Partner,
    RequestRegistered,
    new_event,
)
from shared.http import Problem, request_id_of
from shared.logging import get_logger
from shared.outbox import add_event
from shared.privacy import mask_nik, mask_phone

from . import repository
from .domain import REQUIREMENT_DOCUMENTS, InvalidPhone, new_tracking_code, normalize_phone

log = get_logger(__name__)
router = APIRouter(tags=["requests"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _phone(value: str) -> str:
    try:
        return normalize_phone(value)
    except InvalidPhone as exc:
        raise ValueError(str(exc)) from None


class ApplicantIn(_In):
    name: str = Field(min_length=1, max_length=100)
    nik: str = Field(description="16 digit NIK")
    phone: str = Field(description="WhatsApp number, any common form: 0812…, 62812…, +62 812…")

    @field_validator("nik")
    @classmethod
    def _nik(cls, value: str) -> str:
        if not (len(value) == 16 and value.isdigit()):
            raise ValueError("NIK harus 16 digit angka / NIK must be 16 digits")
        return value

    @field_validator("phone")
    @classmethod
    def _phone_form(cls, value: str) -> str:
        return _phone(value)


class DeliveryIn(_In):
    partner: Partner
    recipient_name: str | None = Field(default=None, max_length=100)
    recipient_phone: str | None = None
    address: Address

    @field_validator("recipient_phone")
    @classmethod
    def _recipient_phone(cls, value: str | None) -> str | None:
        return None if value is None else _phone(value)


class RegisterRequestBody(_In):
    """A request for a document to be delivered home. The COD fee is not the caller's to set."""

    document_type: DocumentType
    channel: Channel = "web"
    applicant: ApplicantIn
    delivery: DeliveryIn


class RegisteredAnswer(BaseModel):
    request_id: uuid.UUID
    tracking_code: str
    status: str
    cod_fee: int
    requirement_documents: list[str]


def _answer(row: asyncpg.Record) -> dict[str, Any]:
    return RegisteredAnswer(
        request_id=row["request_id"],
        tracking_code=row["tracking_code"],
        status=row["status"],
        cod_fee=row["cod_fee"],
        requirement_documents=json.loads(row["requirement_documents"]),
    ).model_dump(mode="json")


@router.post("/requests", status_code=201, response_model=RegisteredAnswer)
async def register_request(
    body: RegisterRequestBody,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    rt = request.app.state.rt
    request_id = uuid.uuid4()
    http_request_id = request_id_of(request)
    registered = RequestRegistered(
        tracking_code=new_tracking_code(),
        document_type=body.document_type,
        channel=body.channel,
        applicant=Applicant(name=body.applicant.name, nik=body.applicant.nik, phone=body.applicant.phone),
        delivery=Delivery(
            partner=body.delivery.partner,
            recipient_name=body.delivery.recipient_name or body.applicant.name,
            recipient_phone=body.delivery.recipient_phone or body.applicant.phone,
            address=body.delivery.address,
        ),
        cod_fee=rt.settings.cod_fee_rupiah,
        requirement_documents=REQUIREMENT_DOCUMENTS[body.document_type],
    )
    body_hash = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    # The applicant's original request: every event it causes carries this id.
    correlation_id = str(request_id)
    event = new_event(
        topics.REQUEST_REGISTERED,
        request_id=request_id,
        correlation_id=correlation_id,
        causation_id=http_request_id,
        producer="intake",
        data=registered,
    )
    async with rt.pool.acquire() as conn:
        try:
            async with conn.transaction():
                if idempotency_key:
                    existing = await repository.find_by_idempotency_key(conn, idempotency_key)
                    if existing is not None:
                        return _replay(existing, body_hash)
                duplicate = await repository.find_open_duplicate(
                    conn, registered.applicant.nik, registered.document_type.value
                )
                if duplicate is not None:
                    raise Problem(
                        409,
                        "Permohonan yang sama masih diproses / The same request is still open",
                        f"Kode lacak {duplicate['tracking_code']}, status {duplicate['status']}."
                        " Tunggu sampai selesai / wait until it is finished.",
                    )
                await repository.insert_request(
                    conn,
                    request_id=request_id,
                    registered=registered,
                    correlation_id=correlation_id,
                    idempotency_key=idempotency_key,
                    body_hash=body_hash,
                )
                await repository.add_timeline(
                    conn,
                    request_id=request_id,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    occurred_at=event.occurred_at,
                    detail={"document_type": registered.document_type.value},
                )
                await add_event(conn, event, rt.schema)
        except asyncpg.UniqueViolationError:
            # a concurrent call with the same Idempotency-Key won the race
            if idempotency_key:
                existing = await repository.find_by_idempotency_key(conn, idempotency_key)
                if existing is not None:
                    return _replay(existing, body_hash)
            raise
    log.info(
        "request registered",
        request_id=str(request_id),
        correlation_id=correlation_id,
        document_type=registered.document_type.value,
        nik=mask_nik(registered.applicant.nik),
        phone=mask_phone(registered.applicant.phone),
    )
    return JSONResponse(
        _answer_from(request_id, registered),
        status_code=201,
        headers={"Location": f"/requests/{request_id}"},
    )


def _answer_from(request_id: uuid.UUID, registered: RequestRegistered) -> dict[str, Any]:
    return RegisteredAnswer(
        request_id=request_id,
        tracking_code=registered.tracking_code,
        status="registered",
        cod_fee=registered.cod_fee,
        requirement_documents=registered.requirement_documents,
    ).model_dump(mode="json")


def _replay(existing: asyncpg.Record, body_hash: str) -> JSONResponse:
    if existing["body_hash"] != body_hash:
        raise Problem(
            409,
            "Idempotency-Key sudah dipakai untuk data lain / Idempotency-Key reused with another body",
            "Gunakan kunci baru untuk permohonan baru / use a new key for a new request",
        )
    return JSONResponse(_answer(existing), status_code=200)


@router.get("/requests/{request_id}")
async def get_request(request_id: uuid.UUID, request: Request) -> Any:
    rt = request.app.state.rt
    async with rt.pool.acquire() as conn:
        row = await repository.get_request(conn, request_id)
        if row is None:
            raise Problem(404, "Permohonan tidak ditemukan / Request not found")
        events = await repository.timeline(conn, request_id)
    delivery = json.loads(row["delivery"])
    return {
        "request_id": str(row["request_id"]),
        "tracking_code": row["tracking_code"],
        "document_type": row["document_type"],
        "channel": row["channel"],
        "status": row["status"],
        "cod_paid": row["cod_paid"],
        "cod_fee": row["cod_fee"],
        "partner": delivery["partner"],
        "applicant": {
            "name": row["applicant_name"],
            "nik": mask_nik(row["applicant_nik"]),
            "phone": mask_phone(row["applicant_phone"]),
        },
        "timeline": [
            {
                "event": e["event_type"],
                "occurred_at": e["occurred_at"].isoformat(),
                "detail": json.loads(e["detail"]),
                **({"note": e["note"]} if e["note"] else {}),
            }
            for e in events
        ],
    }
