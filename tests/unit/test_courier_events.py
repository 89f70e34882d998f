"""Courier's consumed batch: which rows each statement gets (no database; the SQL's effect is
checked against PostgreSQL in tests/integration/test_courier_batch.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.courier import events as courier_events
from shared.contracts import topics
from shared.contracts.events import RequestRejected, new_event
from shared.kafka.consumer import RejectEvent
from tests.support.events import printed, registered


class RecordingConn:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.calls.append((sql, args))
        return "INSERT 0 1"


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
    rejected = new_event(
        topics.REQUEST_REJECTED, request_id=uuid.uuid4(), correlation_id="x", causation_id="t",
        producer="t",
        data=RequestRejected(reason="no", rejected_at=datetime(2026, 11, 20, tzinfo=UTC),
                             operator="op"),
    )
    conn = RecordingConn()
    with pytest.raises(RejectEvent):
        await courier_events.apply_batch(conn, [registered(uuid.uuid4(), "x"), rejected])  # type: ignore[arg-type]
    assert conn.calls == []


def test_handlers_name_the_subscribed_topics() -> None:
    assert set(courier_events.handlers()) == {topics.REQUEST_REGISTERED, topics.DOCUMENT_PRINTED}
