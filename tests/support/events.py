"""Lifecycle events as the courier's tests build them (the request's correlation id is given)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.contracts import topics
from shared.contracts.events import (
    Address,
    Applicant,
    Delivery,
    DocumentPrinted,
    DocumentType,
    Envelope,
    RequestRegistered,
    new_event,
)

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def registered(request_id: uuid.UUID, correlation: str, name: str = "Siti", fee: int = 20000,
               docs: list[str] | None = None) -> Envelope[Any]:
    address = Address(street="Jl. Mawar 1", rt_rw="001/002", kelurahan="Menteng",
                      kecamatan="Menteng", kabupaten_kota="Jakarta Pusat", provinsi="DKI Jakarta",
                      postal_code="10310")
    return new_event(
        topics.REQUEST_REGISTERED,
        request_id=request_id,
        correlation_id=correlation,
        causation_id="test",
        producer="test",
        data=RequestRegistered(
            tracking_code="KTM-1",
            document_type=DocumentType.KK,
            channel="web",
            applicant=Applicant(name=name, nik="3171234567890123", phone="+628123456789"),
            delivery=Delivery(partner="jnt", recipient_name=name, recipient_phone="+628123456789",
                              address=address),
            cod_fee=fee,
            requirement_documents=docs if docs is not None else ["kk_lama"],
        ),
    )


def printed(request_id: uuid.UUID, correlation: str, number: str, minutes: int = 0) -> Envelope[Any]:
    return new_event(
        topics.DOCUMENT_PRINTED,
        request_id=request_id,
        correlation_id=correlation,
        causation_id="test",
        producer="test",
        data=DocumentPrinted(document_number=number, printed_at=T0 + timedelta(minutes=minutes),
                             operator="op"),
    )
