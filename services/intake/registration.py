"""Registering a request: one use case for the web form, operators and the WhatsApp conversation.

In one call to PostgreSQL, so in one transaction (``repository.register_request``): the
Idempotency-Key replay, the "one open request per applicant and document" rule, a place in the
day's capacity, the request row, its first timeline entry and the ``request-registered`` event in
the outbox. This module builds the event and decides what each outcome means: refusals are
exceptions the caller turns into an HTTP problem or a WhatsApp reply; nothing is written when one
is raised.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from shared.contracts import topics
from shared.contracts.events import Applicant, Delivery, DocumentType, RequestRegistered, new_event
from shared.outbox import wake_relay

from . import capacity, repository
from .domain import REQUIREMENT_DOCUMENTS, new_tracking_code
from .inputs import OperatorRegistrationIn, RegistrationIn
from .settings import IntakeSettings


class RegistrationRefused(Exception):
    code = "refused"


class IdempotencyKeyReused(RegistrationRefused):
    code = "idempotency_key_reused"


@dataclass
class OpenRequestExists(RegistrationRefused):
    tracking_code: str
    status: str
    same_phone: bool  # only then may the caller be told the tracking code
    code: str = "open_request_exists"


@dataclass
class DailyQuotaFull(RegistrationRefused):
    day: date
    next_day: date | None
    code: str = "daily_quota_full"


@dataclass(frozen=True)
class Caller:
    """Who registers: the applicant (web, WhatsApp) or an operator (counter)."""

    channel: str  # the contract's channel: web | whatsapp | counter
    intake_via: str  # web | whatsapp | walk_in | phone
    operator_id: str | None = None
    causation_id: str = ""

    @property
    def idempotency_scope(self) -> str:
        return f"operator:{self.operator_id}" if self.operator_id else self.channel


@dataclass
class Registered:
    request_id: uuid.UUID
    tracking_code: str
    document_type: DocumentType
    cod_fee: int
    requirement_documents: list[str]
    service_date: date
    partner: str
    replayed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def answer(self) -> dict[str, Any]:
        """What the registration answers, the same on every replay."""
        return {
            "request_id": str(self.request_id),
            "tracking_code": self.tracking_code,
            "status": "registered",
            "document_type": self.document_type.value,
            "cod_fee": self.cod_fee,
            "requirement_documents": self.requirement_documents,
            "service_date": self.service_date.isoformat(),
        }


def body_digest(body: RegistrationIn | OperatorRegistrationIn) -> str:
    """Of the normalised body: ``0812…`` and ``+62812…`` are the same request."""
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def _replayed(row: asyncpg.Record) -> Registered:
    return Registered(
        request_id=row["request_id"],
        tracking_code=row["tracking_code"],
        document_type=DocumentType(row["document_type"]),
        cod_fee=row["cod_fee"],
        requirement_documents=json.loads(row["requirement_documents"]),
        service_date=row["service_date"],
        partner=json.loads(row["delivery"])["partner"],
        replayed=True,
    )


def quota_of(settings: IntakeSettings, document_type: DocumentType, day: date) -> int:
    return capacity.quota_for(
        day,
        document_type,
        default=settings.daily_quota_default,
        per_type=settings.daily_quota,
        overrides=settings.quota_overrides,
    )


async def next_day_with_room(
    conn: asyncpg.Connection, settings: IntakeSettings, document_type: DocumentType, today: date
) -> date | None:
    days = capacity.days_between(today, today + timedelta(days=settings.quota_horizon_days))
    used = await repository.used_between(conn, document_type.value, days[0], days[-1])
    return capacity.next_day_with_room(
        today,
        settings.quota_horizon_days,
        {d: quota_of(settings, document_type, d) for d in days},
        {d: n for (d, _), n in used.items()},
    )


async def register(
    conn: asyncpg.Connection,
    *,
    settings: IntakeSettings,
    schema: str,
    body: RegistrationIn | OperatorRegistrationIn,
    caller: Caller,
    idempotency_key: str | None = None,
    phone_override: str | None = None,
    now: datetime | None = None,
) -> Registered:
    """Register ``body`` for ``caller``; ``phone_override`` is the WhatsApp sender's number."""
    now = now or datetime.now(UTC)
    scoped_key = f"{caller.idempotency_scope}:{idempotency_key}" if idempotency_key else None
    digest = body_digest(body)
    # Inside a caller's transaction (the WhatsApp conversation's): in a savepoint, so that a
    # refusal releases the locks the call took, and a unique violation (below) leaves the
    # conversation's transaction usable. Otherwise the call is one statement, its own transaction.
    in_callers_transaction = conn.is_in_transaction()
    scope = conn.transaction() if in_callers_transaction else contextlib.nullcontext()
    try:
        async with scope:
            done = await _register(
                conn, settings, body, caller, scoped_key, digest, phone_override, now
            )
    except asyncpg.UniqueViolationError as exc:
        # A concurrent call with the same Idempotency-Key (and another applicant or document, so
        # not behind the same lock) committed first: answer as it did.
        if scoped_key and exc.constraint_name == "requests_idempotency_key_key":
            existing = await repository.find_by_idempotency_key(conn, scoped_key)
            if existing is not None:
                return _replay_or_refuse(existing, digest)
        raise
    if not done.replayed and not in_callers_transaction:
        wake_relay(schema)  # committed (the call was its own transaction); else the caller wakes
    return done


def _replay_or_refuse(existing: asyncpg.Record, digest: str) -> Registered:
    if existing["body_hash"] != digest:
        raise IdempotencyKeyReused()
    return _replayed(existing)


async def _register(
    conn: asyncpg.Connection,
    settings: IntakeSettings,
    body: RegistrationIn | OperatorRegistrationIn,
    caller: Caller,
    scoped_key: str | None,
    digest: str,
    phone_override: str | None,
    now: datetime,
) -> Registered:
    applicant_phone = phone_override or body.applicant.phone
    nik, document_type = body.applicant.nik, body.document_type
    another_person = isinstance(body, OperatorRegistrationIn) and body.another_person
    today = capacity.office_today(now, settings.zone)
    request_id = uuid.uuid4()
    correlation_id = str(request_id)  # the applicant's original request: every event carries it
    causation_id = caller.causation_id or str(uuid.uuid4())
    registered = RequestRegistered(
        tracking_code=new_tracking_code(),
        document_type=document_type,
        channel=caller.channel,  # type: ignore[arg-type]
        applicant=Applicant(name=body.applicant.name, nik=nik, phone=applicant_phone),
        delivery=Delivery(
            partner=body.delivery.partner,
            recipient_name=body.delivery.recipient_name or body.applicant.name,
            recipient_phone=body.delivery.recipient_phone or applicant_phone,
            address=body.delivery.address.to_contract(),
        ),
        cod_fee=settings.cod_fee_rupiah,
        requirement_documents=REQUIREMENT_DOCUMENTS[document_type],
    )
    # 40 random bits: a clash with an earlier code is unlikely, not impossible over years of
    # requests. Nothing is looked up first: the insert skips a taken code (ON CONFLICT on that
    # constraint), the call writes nothing and says so, and the request is registered again with
    # a fresh draw.
    for _ in range(5):
        event = new_event(
            topics.REQUEST_REGISTERED,
            request_id=request_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
            producer="intake",
            data=registered,
            occurred_at=now,
        )
        # One call (repository.register_request): the lock on the applicant and document type,
        # the replay and open-request lookups, the day's capacity (the counter never refuses an
        # operator at the counter), and the writes.
        done = await repository.register_request(
            conn,
            event=event,
            idempotency_key=scoped_key,
            open_nik=None if another_person else nik,
            body_hash=digest,
            intake_via=caller.intake_via,
            registered_by=caller.operator_id,
            service_date=today,
            quota=quota_of(settings, document_type, today),
            enforce_quota=caller.operator_id is None,
        )
        if done.outcome != "tracking_code_taken":
            break
        registered = registered.model_copy(update={"tracking_code": new_tracking_code()})
    else:
        raise RuntimeError("no unused tracking code after 5 draws")
    if done.outcome == "replay":
        assert done.earlier is not None
        return _replay_or_refuse(done.earlier, digest)
    if done.outcome == "open":
        assert done.earlier is not None
        raise OpenRequestExists(
            tracking_code=done.earlier["tracking_code"],
            status=done.earlier["status"],
            same_phone=caller.operator_id is not None
            or done.earlier["applicant_phone"] == applicant_phone,
        )
    if done.outcome == "quota_full":
        raise DailyQuotaFull(today, await next_day_with_room(conn, settings, document_type, today))
    return Registered(
        request_id=request_id,
        tracking_code=registered.tracking_code,
        document_type=document_type,
        cod_fee=registered.cod_fee,
        requirement_documents=registered.requirement_documents,
        service_date=today,
        partner=registered.delivery.partner,
    )
