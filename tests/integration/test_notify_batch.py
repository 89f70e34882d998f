"""Notify's consumer notes a batch with set-based SQL: the rows must be those of noting the events
one by one, in any order (the person at the door included); a bad event is dead-lettered alone;
two batches on one request wait for each other; a batch costs a few statements, not a few per
event."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from services.notify import events as notify_events
from shared.contracts import topics
from shared.contracts.events import (
    Address,
    Applicant,
    CodPaid,
    Delivery,
    DeliveryFailed,
    DocumentPrinted,
    DocumentType,
    Envelope,
    HandedToCourier,
    RequestRegistered,
    new_event,
)
from shared.db.pool import Pool, create_pool, migrate
from shared.kafka.consumer import EventConsumer

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).parents[2] / "services" / "notify" / "migrations"
T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
APPLICANT_PHONE = "+628123456789"
DOOR_PHONE = "+628129999001"


def _event(event_type: str, request_id: uuid.UUID, data: Any, minutes: int) -> Envelope[Any]:
    return new_event(event_type, request_id=request_id, correlation_id=str(request_id),
                     causation_id="test", producer="test", data=data,
                     occurred_at=T0 + timedelta(minutes=minutes))


def registered(request_id: uuid.UUID, *, door_phone: str = APPLICANT_PHONE, name: str = "Siti",
               fee: int = 20000) -> Envelope[Any]:
    address = Address(street="Jl. Mawar 1", rt_rw="001/002", kelurahan="Menteng",
                      kecamatan="Menteng", kabupaten_kota="Jakarta Pusat", provinsi="DKI Jakarta",
                      postal_code="10310")
    door_name = name if door_phone == APPLICANT_PHONE else "Keluarga Siti"
    return _event(topics.REQUEST_REGISTERED, request_id, RequestRegistered(
        tracking_code="KTM-1",
        document_type=DocumentType.AKTA_KEMATIAN,
        channel="web",
        applicant=Applicant(name=name, nik="3171234567890123", phone=APPLICANT_PHONE),
        delivery=Delivery(partner="jnt", recipient_name=door_name, recipient_phone=door_phone,
                          address=address),
        cod_fee=fee,
        requirement_documents=["kk_lama"],
    ), 0)


def printed(request_id: uuid.UUID) -> Envelope[Any]:
    return _event(topics.DOCUMENT_PRINTED, request_id,
                  DocumentPrinted(document_number="N-1", printed_at=T0, operator="op"), 1)


def handed(request_id: uuid.UUID) -> Envelope[Any]:
    return _event(topics.HANDED_TO_COURIER, request_id,
                  HandedToCourier(partner="jnt", waybill="JT1", cod_amount=20000, handed_at=T0), 2)


def failed_at_door(request_id: uuid.UUID) -> Envelope[Any]:
    return _event(topics.DELIVERY_FAILED, request_id,
                  DeliveryFailed(partner="jnt", waybill="JT1", failed_at=T0, reason="tutup",
                                 attempt=1), 3)


def cod_paid(request_id: uuid.UUID) -> Envelope[Any]:
    return _event(topics.COD_PAID, request_id,
                  CodPaid(partner="jnt", waybill="JT1", amount=20000, paid_at=T0), 4)


@pytest.fixture
async def pool(database: str) -> Any:
    schema = f"notify_{uuid.uuid4().hex[:8]}"
    await migrate(database, schema, MIGRATIONS)
    pool = await create_pool(database, schema, 2, 4)
    yield pool
    async with pool.acquire() as conn:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await pool.close()


# next_attempt_at and created_at are now(): they differ between transactions.
_STATE = """
SELECT event_id, recipient, request_id, event_type, occurred_at, event_data, status, attempts,
    error, source
FROM notifications ORDER BY event_id, recipient
"""


async def _state(conn: asyncpg.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    notes = [dict(r) for r in await conn.fetch(_STATE)]
    recipients = [dict(r) for r in await conn.fetch("SELECT * FROM recipients ORDER BY request_id")]
    return notes, recipients


async def _rows(conn: asyncpg.Connection, event: Envelope[Any]) -> dict[str, str]:
    rows = await conn.fetch("SELECT recipient, status FROM notifications WHERE event_id = $1",
                            event.event_id)
    return {r["recipient"]: r["status"] for r in rows}


async def test_a_batch_in_any_order_ends_like_one_event_at_a_time(pool: Pool) -> None:
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    # a: someone else at the door, and a second (inconsistent) registration that must not win
    # over the first one consumed; d: a door event noted before its registration, and a replayed
    # dead letter whose row failed; b: the applicant at the door; c: never registered
    reg_a, reg_a2 = registered(a, door_phone=DOOR_PHONE), registered(a, name="Budi")
    handed_a, failed_a, printed_a = handed(a), failed_at_door(a), printed(a)
    handed_d, printed_d, reg_d = handed(d), printed(d), registered(d, door_phone=DOOR_PHONE)
    handed_b, reg_b, handed_c, cod_c = handed(b), registered(b), handed(c), cod_paid(c)
    before = [handed_d, printed_d]

    async def earlier_batches(conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE notifications, recipients")
        async with conn.transaction():
            await notify_events.apply_batch(conn, before)
        await conn.execute("UPDATE notifications SET status = 'failed', error = 'given up'"
                           " WHERE event_id = $1", printed_d.event_id)

    async with pool.acquire() as conn:
        for order in itertools.permutations([reg_a, handed_a, failed_a, reg_a2, printed_a]):
            batch = [*order, handed_b, reg_d, printed_d, handed_c, reg_b, cod_c]
            await earlier_batches(conn)
            async with conn.transaction():
                for event in batch:
                    await notify_events.note_event(conn, event)
            one_by_one = await _state(conn)

            await earlier_batches(conn)
            async with conn.transaction():
                await notify_events.apply_batch(conn, batch)
            assert await _state(conn) == one_by_one, [e.event_type for e in order]

            # what one by one means, independently of the code under test
            first = reg_a if order.index(reg_a) < order.index(reg_a2) else reg_a2
            stored = await conn.fetchrow("SELECT name, delivery_phone FROM recipients"
                                         " WHERE request_id = $1", a)
            assert stored["name"] == first.data.applicant.name
            for door_event in (handed_a, failed_a):
                # told at the door if reg_a came first, or before the door event was (copied)
                told = first is reg_a or order.index(reg_a) > order.index(door_event)
                expected = {"applicant": "pending"} | ({"delivery": "pending"} if told else {})
                assert await _rows(conn, door_event) == expected
            assert await _rows(conn, printed_a) == {"applicant": "pending"}
        assert await _rows(conn, handed_d) == {"applicant": "pending", "delivery": "pending"}
        assert await _rows(conn, printed_d) == {"applicant": "pending"}  # re-armed
        assert await _rows(conn, handed_b) == {"applicant": "pending"}
        assert await _rows(conn, handed_c) == {"applicant": "pending"}
        assert await _rows(conn, cod_c) == {"applicant": "pending"}


class CountingConnection:
    """A connection that counts the statements sent (each one a round trip)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements: list[str] = []

    async def execute(self, sql: str, *args: Any) -> Any:
        self.statements.append(sql)
        return await self.conn.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> Any:
        self.statements.append(sql)
        return await self.conn.fetch(sql, *args)


async def test_a_batch_costs_a_few_statements_whatever_its_size(pool: Pool) -> None:
    requests = [uuid.uuid4() for _ in range(20)]
    batch = []
    for i, r in enumerate(requests):
        reg = registered(r, door_phone=DOOR_PHONE if i % 4 == 0 else APPLICANT_PHONE)
        batch += [reg, printed(r), handed(r), cod_paid(r)]
    async with pool.acquire() as raw, raw.transaction():
        conn = CountingConnection(raw)
        await notify_events.apply_batch(conn, batch)  # type: ignore[arg-type]
        assert len(conn.statements) == 3  # the locks, who to tell, the messages
        # 80 events, and the 5 door contacts told about the courier
        assert await raw.fetchval("SELECT count(*) FROM notifications") == 85

        conn.statements.clear()
        await notify_events.apply_batch(conn, [printed(uuid.uuid4())])  # type: ignore[arg-type]
        assert len(conn.statements) == 1  # nothing depends on who is at the door: no lock


async def test_batches_on_one_request_wait_for_each_other(pool: Pool) -> None:
    """Two notify instances, each with half of two requests: whichever commits second sees the
    other's rows, so both door contacts are told."""
    one, two = uuid.uuid4(), uuid.uuid4()
    handed_one, handed_two = handed(one), handed(two)
    async with pool.acquire() as first, pool.acquire() as second:
        tx = first.transaction()
        await tx.start()
        await notify_events.apply_batch(first, [handed_one, registered(two, door_phone=DOOR_PHONE)])

        async def other_instance() -> None:
            async with second.transaction():
                await notify_events.apply_batch(
                    second, [registered(one, door_phone=DOOR_PHONE), handed_two]
                )

        task = asyncio.create_task(other_instance())
        await asyncio.sleep(0.3)
        assert not task.done()  # waiting for the first batch's locks
        await tx.commit()
        await asyncio.wait_for(task, 10)
        assert await _rows(first, handed_one) == {"applicant": "pending", "delivery": "pending"}
        assert await _rows(first, handed_two) == {"applicant": "pending", "delivery": "pending"}


def _record(offset: int, event: Envelope[Any]) -> ConsumerRecord:
    value = event.model_dump_json().encode()
    return ConsumerRecord(topic=event.event_type, partition=0, offset=offset, timestamp=0,
                          timestamp_type=0, key=str(event.request_id).encode(), value=value,
                          checksum=None, serialized_key_size=36,
                          serialized_value_size=len(value), headers=[])


async def test_a_bad_event_in_a_batch_is_dead_lettered_alone(pool: Pool) -> None:
    good, bad = uuid.uuid4(), uuid.uuid4()
    calls: list[int] = []

    async def batch_handler(conn: asyncpg.Connection, events: Any) -> None:
        calls.append(len(events))
        await notify_events.apply_batch(conn, events)

    consumer = EventConsumer(service="notify", group_id="notify", pool_provider=lambda: pool,
                             handlers=notify_events.handlers(), batch_handler=batch_handler)
    # a fee PostgreSQL cannot store (integer): that event can never be noted
    poison = registered(bad, fee=2**31)
    batch = [handed(good), registered(good, door_phone=DOOR_PHONE), poison, printed(bad),
             printed(good)]
    await consumer.consume_batch([_record(i, e) for i, e in enumerate(batch)])

    assert calls == [5]  # failed whole, then applied one event at a time by the topic handlers
    assert consumer.stats.applied == 4 and consumer.stats.dead_lettered == 1
    dead = await pool.fetch('SELECT "offset", reason FROM dead_letter')
    assert [r["offset"] for r in dead] == [2]
    assert "int32" in dead[0]["reason"]
    async with pool.acquire() as conn:
        assert await _rows(conn, batch[0]) == {"applicant": "pending", "delivery": "pending"}
        assert await _rows(conn, batch[3]) == {"applicant": "pending"}
        assert await _rows(conn, poison) == {}
        assert await conn.fetchval("SELECT count(*) FROM recipients") == 1

    # a good batch is applied at once
    calls.clear()
    await consumer.consume_batch([_record(10, printed(uuid.uuid4())), _record(11, handed(good))])
    assert calls == [2]
