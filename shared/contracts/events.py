"""The event contract between services: the envelope and every payload, version 1.

Other services rely on these models; change them only additively (a new optional field keeps
``event_version``). ``tests/unit/test_contract_compat.py`` compares them with the JSON Schemas
committed in ``shared/contracts/schemas/`` and fails on a backward-incompatible change;
``make schemas`` regenerates the files after a compatible change.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from shared.contracts import topics
from shared.contracts.money import Rupiah

Partner = Literal["pos", "jnt"]
Channel = Literal["whatsapp", "web", "counter"]
Nik = Annotated[str, Field(pattern=r"^\d{16}$", description="Nomor Induk Kependudukan, 16 digits")]
PhoneE164 = Annotated[
    str, Field(pattern=r"^\+62\d{7,13}$", description="Indonesian phone number in +62 form")
]


class DocumentType(StrEnum):
    KK = "kk"
    KTP_EL = "ktp_el"
    KIA = "kia"
    AKTA_KELAHIRAN = "akta_kelahiran"
    AKTA_KEMATIAN = "akta_kematian"
    AKTA_PERKAWINAN = "akta_perkawinan"
    AKTA_PERCERAIAN = "akta_perceraian"
    AKTA_PENGANGKATAN_ANAK = "akta_pengangkatan_anak"
    SURAT_PINDAH = "surat_pindah"


class _Model(BaseModel):
    # Consumers ignore fields they do not know: producers may add optional fields (additive change).
    model_config = ConfigDict(extra="ignore", frozen=True)


class Address(_Model):
    street: str = Field(min_length=1, description="Jalan, nomor rumah, dusun")
    rt_rw: str = Field(min_length=1, description="RT/RW, e.g. 003/005")
    kelurahan: str = Field(min_length=1, description="Kelurahan or desa")
    kecamatan: str = Field(min_length=1)
    kabupaten_kota: str = Field(min_length=1)
    provinsi: str = Field(min_length=1)
    postal_code: str = Field(pattern=r"^\d{5}$")


class Applicant(_Model):
    name: str = Field(min_length=1)
    nik: Nik
    phone: PhoneE164


class Delivery(_Model):
    partner: Partner
    recipient_name: str = Field(min_length=1)
    recipient_phone: PhoneE164
    address: Address


class RequestRegistered(_Model):
    tracking_code: str = Field(description="Code the applicant uses to follow the request")
    document_type: DocumentType
    channel: Channel
    applicant: Applicant
    delivery: Delivery
    cod_fee: Rupiah = Field(description="Courier shipping fee collected at the door (Rp 20.000)")
    requirement_documents: list[str] = Field(
        description="Original requirement documents the courier collects at the door"
    )


class DocumentPrinted(_Model):
    document_number: str = Field(min_length=1)
    printed_at: AwareDatetime
    operator: str = Field(min_length=1)


class HandedToCourier(_Model):
    partner: Partner
    waybill: str = Field(min_length=1, description="Air waybill (AWB) / J&T billCode")
    cod_amount: Rupiah
    handed_at: AwareDatetime


class CodPaid(_Model):
    partner: Partner
    waybill: str = Field(min_length=1)
    amount: Rupiah = Field(description="Amount the courier reports collected, in rupiah")
    paid_at: AwareDatetime


class Delivered(_Model):
    partner: Partner
    waybill: str = Field(min_length=1)
    delivered_at: AwareDatetime
    received_by: str
    documents_collected: bool = Field(
        description="Whether the original requirement documents were collected at the door"
    )


class RequestRejected(_Model):
    reason: str = Field(min_length=1)
    rejected_at: AwareDatetime
    operator: str = Field(min_length=1)


class DeliveryFailed(_Model):
    partner: Partner
    waybill: str = Field(min_length=1)
    failed_at: AwareDatetime
    reason: str
    attempt: int = Field(ge=1)


class ReturnedToOffice(_Model):
    partner: Partner
    waybill: str = Field(min_length=1)
    returned_at: AwareDatetime
    reason: str


P = TypeVar("P", bound=_Model)


class Envelope(_Model, Generic[P]):
    """The JSON value of every message (DESIGN.md section 2)."""

    event_id: uuid.UUID = Field(description="Unique per event; every consumer's idempotency key")
    event_type: str = Field(description="The topic's name")
    event_version: int = Field(ge=1, description="Raised only by breaking changes")
    occurred_at: AwareDatetime = Field(description="RFC 3339 UTC time of the fact")
    request_id: uuid.UUID = Field(description="The request the event is about; also the key")
    correlation_id: str = Field(min_length=1, description="Id of the applicant's original request")
    causation_id: str = Field(min_length=1, description="Event, webhook or HTTP request that caused it")
    producer: str = Field(min_length=1, description="Service that emitted it")
    data: P

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class RequestRegisteredEvent(Envelope[RequestRegistered]):
    event_type: Literal["request-registered"]


class DocumentPrintedEvent(Envelope[DocumentPrinted]):
    event_type: Literal["document-printed"]


class HandedToCourierEvent(Envelope[HandedToCourier]):
    event_type: Literal["handed-to-courier"]


class CodPaidEvent(Envelope[CodPaid]):
    event_type: Literal["cod-paid"]


class DeliveredEvent(Envelope[Delivered]):
    event_type: Literal["delivered"]


class RequestRejectedEvent(Envelope[RequestRejected]):
    event_type: Literal["request-rejected"]


class DeliveryFailedEvent(Envelope[DeliveryFailed]):
    event_type: Literal["delivery-failed"]


class ReturnedToOfficeEvent(Envelope[ReturnedToOffice]):
    event_type: Literal["returned-to-office"]


EVENT_MODELS: dict[str, type[Envelope[Any]]] = {
    topics.REQUEST_REGISTERED: RequestRegisteredEvent,
    topics.DOCUMENT_PRINTED: DocumentPrintedEvent,
    topics.HANDED_TO_COURIER: HandedToCourierEvent,
    topics.COD_PAID: CodPaidEvent,
    topics.DELIVERED: DeliveredEvent,
    topics.REQUEST_REJECTED: RequestRejectedEvent,
    topics.DELIVERY_FAILED: DeliveryFailedEvent,
    topics.RETURNED_TO_OFFICE: ReturnedToOfficeEvent,
}
PAYLOAD_MODELS: dict[str, type[_Model]] = {
    name: model.model_fields["data"].annotation  # type: ignore[misc]
    for name, model in EVENT_MODELS.items()
}
CURRENT_VERSION: dict[str, int] = {name: 1 for name in EVENT_MODELS}


class UnsupportedEvent(ValueError):
    """The message is not an event this consumer can read (wrong type or a newer version)."""


def parse_event(topic: str, raw: bytes | str) -> Envelope[Any]:
    """Validate one message value against the contract of its topic.

    Raises ``pydantic.ValidationError`` or ``UnsupportedEvent``: both mean the message can never
    succeed as it is (a dead letter), never an infrastructure problem.
    """
    model = EVENT_MODELS.get(topic)
    if model is None:
        raise UnsupportedEvent(f"no contract for topic {topic!r}")
    event = model.model_validate_json(raw)
    if event.event_type != topic:
        raise UnsupportedEvent(f"event_type {event.event_type!r} on topic {topic!r}")
    if event.event_version > CURRENT_VERSION[topic]:
        raise UnsupportedEvent(
            f"{topic} version {event.event_version} is newer than this consumer reads"
            f" ({CURRENT_VERSION[topic]})"
        )
    return event


def new_event(
    event_type: str,
    *,
    request_id: uuid.UUID,
    correlation_id: str,
    causation_id: str,
    producer: str,
    data: _Model,
    occurred_at: datetime | None = None,
) -> Envelope[Any]:
    """Build a validated envelope for ``event_type`` (the topic name)."""
    model = EVENT_MODELS[event_type]
    return model(
        event_id=uuid.uuid4(),
        event_type=event_type,
        event_version=CURRENT_VERSION[event_type],
        occurred_at=occurred_at or datetime.now(UTC),
        request_id=request_id,
        correlation_id=correlation_id,
        causation_id=causation_id,
        producer=producer,
        data=data,
    )
