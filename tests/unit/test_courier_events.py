"""Courier's consumed batch: which rows each statement gets (no database; the SQL's effect is
checked against PostgreSQL in tests/integration/test_courier_batch.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.courier import events as courier_events
from shared.contracts import topics
from shared.contracts.events import (
    Address,
    Applicant,
    Delivery,
    DocumentPrinted,
    DocumentType,
    Envelope,
    RequestRegistered,
    RequestRejected,
    new_event,
)
from shared.kafka.consumer import RejectEvent


class RecordingConn:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.calls.append((sql, args))
        return "INSERT 0 1"


def _event(topic: str, request_id: uuid.UUID, correlation: str, data: Any) -> Envelope[Any]:
    return new_event(topic, request_id=request_id, correlation_id=correlation,
                     causation_id="t", producer="t", data=data)


def registered(request_id: uuid.UUID, correlation: str, name: str = "Siti") -> Envelope[Any]:
    address = Address(street="Jl. Mawar 1", rt_rw="001/002", kelurahan="Menteng",
                      kecamatan="Menteng", kabupaten_kota="Jakarta Pusat", provinsi="DKI Jakarta",
                      postal_code="10310")
    return _event(topics.REQUEST_REGISTERED, request_id, correlation, RequestRegistered(
        tracking_code="KTM-1", document_type=DocumentType.KTP_EL, channel="web",
        applicant=Applicant(name=name, nik="3171234567890123", phone="+628123456789"),
        delivery=Delivery(partner="pos", recipient_name=name, recipient_phone="+628123456789",
                          address=address),
        cod_fee=20000, requirement_documents=["kk_lama"],
    ))


def printed(request_id: uuid.UUID, correlation: str, number: str) -> Envelope[Any]:
    return _event(topics.DOCUMENT_PRINTED, request_id, correlation, DocumentPrinted(
        document_number=number, printed_at=datetime(2026, 11, 20, tzinfo=UTC), operator="op"))


async def test_one_statement_per_kind_first_event_of_a_kind_wins_rows_sorted() -> None:
    a, b, c = sorted(uuid.uuid4() for _ in range(3))
    conn = RecordingConn()
    await courier_events.apply_batch(conn, [  # type: ignore[arg-type]
        printed(c, "corr-c", "N-c"),
        printed(a, "corr-a-p", "N-a1"),
        registered(b, "corr-b", name="Budi"),
        registered(a, "corr-a-r", name="Siti"),
        printed(a, "corr-a-p2", "N-a2"),
        registered(a, "corr-a-r2", name="Late"),
    ])
    (lock_sql, (keys,)), (reg_sql, reg), (print_sql, prt) = conn.calls
    # several requests: one advisory lock each, taken first, in one sorted pass
    assert "pg_advisory_xact_lock" in lock_sql and len(keys) == 3 and keys == sorted(keys)
    assert "registered = true" in reg_sql and "printed_at = excluded.printed_at" in print_sql
    # registrations: a and b, sorted; a's insert would carry its FIRST event's correlation id
    assert reg[0] == [a, b] and reg[1] == ["corr-a-p", "corr-b"] and reg[4] == ["Siti", "Budi"]
    assert prt[0] == [a, c] and prt[1] == ["corr-a-p", "corr-c"] and prt[3] == ["N-a1", "N-c"]


async def test_the_one_event_path_is_one_statement() -> None:
    """(one request: nothing to order, no advisory lock)"""
    conn = RecordingConn()
    await courier_events.apply_batch(conn, [registered(uuid.uuid4(), "x")])  # type: ignore[arg-type]
    assert len(conn.calls) == 1


async def test_an_event_courier_does_not_consume_is_rejected() -> None:
    rejected = _event(topics.REQUEST_REJECTED, uuid.uuid4(), "x", RequestRejected(
        reason="no", rejected_at=datetime(2026, 11, 20, tzinfo=UTC), operator="op"))
    conn = RecordingConn()
    with pytest.raises(RejectEvent):
        await courier_events.apply_batch(conn, [registered(uuid.uuid4(), "x"), rejected])  # type: ignore[arg-type]
    assert conn.calls == []


def test_handlers_name_the_subscribed_topics() -> None:
    assert set(courier_events.handlers()) == {topics.REQUEST_REGISTERED, topics.DOCUMENT_PRINTED}
