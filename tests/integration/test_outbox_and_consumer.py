"""The guarantees of DESIGN.md section 3, proven against the real broker and database."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import TopicPartition
from faststream.kafka import KafkaBroker

from shared import outbox
from shared.contracts import topics
from shared.contracts.events import DocumentPrinted, Envelope, new_event
from shared.db.pool import Pool, create_pool, migrate
from shared.kafka.consumer import EventConsumer, RejectEvent
from shared.outbox import OutboxRelay, add_event, wake_relay
from tests.support.infra import (
    KAFKA,
    committed,
    end_offsets,
    produce,
    read_topics,
    seed_group_at_end,
)

pytestmark = pytest.mark.integration

EMPTY_MIGRATIONS = Path(__file__).parent / "no_migrations"


def printed(request_id: uuid.UUID, number: str) -> Envelope[Any]:
    now = datetime.now(UTC)
    return new_event(
        topics.DOCUMENT_PRINTED,
        request_id=request_id,
        correlation_id=str(request_id),
        causation_id="test",
        producer="test",
        data=DocumentPrinted(document_number=number, printed_at=now, operator="op"),
    )


async def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


@pytest.fixture
async def schema_pool(database: str) -> Any:
    schema = f"t_{uuid.uuid4().hex[:8]}"
    await migrate(database, schema, EMPTY_MIGRATIONS)
    pool = await create_pool(database, schema)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE effects (event_id uuid PRIMARY KEY, number text)")
    yield schema, pool
    await pool.close()


async def test_relay_publishes_outbox_rows_in_order_with_headers(
    database: str, schema_pool: Any, ns: str
) -> None:
    schema, pool = schema_pool
    start = await end_offsets([ns + topics.DOCUMENT_PRINTED])
    request_id = uuid.uuid4()
    events = [printed(request_id, f"N-{i}") for i in range(30)]
    async with pool.acquire() as conn:
        for event in events:
            async with conn.transaction():
                await add_event(conn, event)
        # a rolled-back transaction publishes nothing
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await add_event(conn, printed(request_id, "never"))
                raise RuntimeError("business change failed")
    relay = OutboxRelay(dsn=database, schema=schema, bootstrap_servers=KAFKA, batch_size=7,
                        topic_prefix=ns)
    await relay.start()
    try:
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"))
    finally:
        await relay.stop()
    records = await read_topics(start, key=str(request_id).encode())
    assert [r.value for r in records] == [e.model_dump_json().encode() for e in events]
    assert len({r.partition for r in records}) == 1  # one key, one partition, in order
    headers = dict(records[0].headers)
    assert headers["event_type"] == b"document-printed"
    assert headers["event_id"] == str(events[0].event_id).encode()
    assert headers["correlation_id"] == str(request_id).encode()


async def _run_consumer(
    pool: Pool, group: str, handler: Any, ns: str, service: str = "t"
) -> tuple[KafkaBroker, EventConsumer]:
    broker = KafkaBroker(KAFKA, allow_auto_create_topics=False, apply_types=False)  # as the runtime
    consumer = EventConsumer(
        service=service,
        group_id=group,
        pool_provider=lambda: pool,
        handlers={topics.DOCUMENT_PRINTED: handler},
        batch_timeout_ms=20,
        topic_prefix=ns,
    )
    consumer.attach(broker)
    await broker.start()
    return broker, consumer


async def test_offsets_committed_only_after_the_effect_is_durable(schema_pool: Any, ns: str) -> None:
    """While the database fails, the offset stays; after a crash the event is redelivered and
    applied once; the offset moves only when the effect is committed."""
    _, pool = schema_pool
    group = f"it-ack-{uuid.uuid4().hex[:6]}"
    await seed_group_at_end(group, [ns + topics.DOCUMENT_PRINTED])
    request_id = uuid.uuid4()
    event = printed(request_id, "A-1")
    failures = {"left": 3}
    calls = {"n": 0}

    async def flaky(conn: asyncpg.Connection, ev: Envelope[Any]) -> None:
        if ev.event_id != event.event_id:
            return
        calls["n"] += 1
        if failures["left"] > 0:
            failures["left"] -= 1
            raise ConnectionError("database unreachable (simulated)")
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", ev.event_id, ev.data.document_number)

    before = await end_offsets([ns + topics.DOCUMENT_PRINTED])
    await produce(ns + topics.DOCUMENT_PRINTED, event.model_dump_json().encode(), key=str(request_id).encode())
    after = await end_offsets([ns + topics.DOCUMENT_PRINTED])
    (tp,) = [tp for tp in after if after[tp] != before[tp]]

    broker, consumer = await _run_consumer(pool, group, flaky, ns)
    try:
        await wait_until(lambda: _true(calls["n"] >= 2))
        # the effect failed so far: nothing may be committed past the message
        assert (await committed(group, [tp]))[tp] == before[tp]
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 1 FROM effects"))
        await wait_until(lambda: _committed_is(group, tp, after[tp]))
    finally:
        await broker.stop()

    # a second delivery of the same event (a redelivery after a crash) has no second effect
    await produce(ns + topics.DOCUMENT_PRINTED, event.model_dump_json().encode(), key=str(request_id).encode())
    broker, consumer = await _run_consumer(pool, group, flaky, ns)
    try:
        await wait_until(lambda: _true(consumer.stats.duplicates >= 1))
    finally:
        await broker.stop()
    assert await pool.fetchval("SELECT count(*) FROM effects") == 1
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event.event_id) == 1


async def test_crash_before_commit_redelivers(schema_pool: Any, ns: str) -> None:
    """A consumer that dies while applying (no ack) leaves the offset; the next one applies it."""
    _, pool = schema_pool
    group = f"it-crash-{uuid.uuid4().hex[:6]}"
    await seed_group_at_end(group, [ns + topics.DOCUMENT_PRINTED])
    event = printed(uuid.uuid4(), "C-1")
    started = asyncio.Event()

    async def hangs(conn: asyncpg.Connection, ev: Envelope[Any]) -> None:
        if ev.event_id == event.event_id:
            started.set()
            await asyncio.sleep(3600)

    async def applies(conn: asyncpg.Connection, ev: Envelope[Any]) -> None:
        if ev.event_id == event.event_id:
            await conn.execute("INSERT INTO effects VALUES ($1, $2)", ev.event_id, "C-1")

    await produce(ns + topics.DOCUMENT_PRINTED, event.model_dump_json().encode(), key=b"crash")
    broker, _ = await _run_consumer(pool, group, hangs, ns)
    await asyncio.wait_for(started.wait(), 20)
    # "crash": the consumer is torn down mid-handler without acknowledging
    for sub in broker.subscribers:
        for task in getattr(sub, "tasks", []):
            task.cancel()
    await broker.stop()
    broker, _ = await _run_consumer(pool, group, applies, ns)
    try:
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 1 FROM effects WHERE number = 'C-1'"))
    finally:
        await broker.stop()


async def test_poison_messages_are_dead_lettered_and_the_partition_keeps_flowing(
    database: str, schema_pool: Any, ns: str
) -> None:
    schema, pool = schema_pool
    group = f"it-dlq-{uuid.uuid4().hex[:6]}"
    await seed_group_at_end(group, [ns + topics.DOCUMENT_PRINTED])
    dlq_start = await end_offsets([ns + "dlq.printing"])
    good = printed(uuid.uuid4(), "G-1")
    rejected = printed(uuid.uuid4(), "R-1")

    async def handler(conn: asyncpg.Connection, ev: Envelope[Any]) -> None:
        if ev.event_id == rejected.event_id:
            raise RejectEvent("document number R-1 is cancelled")
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", ev.event_id, ev.data.document_number)

    key = b"same-key-same-partition"
    await produce(ns + topics.DOCUMENT_PRINTED, b"{not json", key=key)
    await produce(ns + topics.DOCUMENT_PRINTED, b'{"event_type": "document-printed"}', key=key,
                  headers=[("bad-header", b"\xff\xfe")])
    await produce(ns + topics.DOCUMENT_PRINTED, rejected.model_dump_json().encode(), key=key)
    await produce(ns + topics.DOCUMENT_PRINTED, good.model_dump_json().encode(), key=key)

    broker = KafkaBroker(KAFKA, allow_auto_create_topics=False, apply_types=False)  # as the runtime
    consumer = EventConsumer(service="printing", group_id=group, pool_provider=lambda: pool,
                             handlers={topics.DOCUMENT_PRINTED: handler}, batch_timeout_ms=20,
                             topic_prefix=ns)
    consumer.attach(broker)
    await broker.start()
    try:
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 1 FROM effects WHERE number = 'G-1'"))
    finally:
        await broker.stop()
    rows = await pool.fetch("SELECT reason FROM dead_letter ORDER BY id")
    reasons = [r["reason"] for r in rows]
    assert len(reasons) == 3, reasons
    assert reasons[0].startswith("invalid event:") and "Invalid JSON" in reasons[0]
    assert "event_id: Field required" in reasons[1]
    assert reasons[2] == "RejectEvent: document number R-1 is cancelled"
    # the rejected event's inbox row was rolled back with its savepoint: a replay can apply it
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", rejected.event_id) == 0
    # dead letters leave through the outbox, to the service's dead-letter topic
    outbox = await pool.fetch("SELECT topic, headers FROM outbox ORDER BY id")
    assert [r["topic"] for r in outbox] == ["dlq.printing"] * 3
    relay = OutboxRelay(dsn=database, schema=schema, bootstrap_servers=KAFKA, topic_prefix=ns)
    await relay.start()
    try:
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"))
    finally:
        await relay.stop()
    dead = await read_topics(dlq_start, key=key)
    assert dead[0].value == b"{not json"
    first = dict(dead[0].headers)
    assert first["dlq-original-topic"] == b"document-printed"  # the contract's name
    assert first["dlq-consumer"] == group.encode()
    assert first["dlq-reason"].startswith(b"invalid event:")
    assert len(dead) == 3


async def _committed_is(group: str, tp: TopicPartition, offset: int) -> bool:
    return (await committed(group, [tp]))[tp] == offset


async def _true(value: bool) -> bool:
    return value


def _record(topic: str, offset: int, event: Envelope[Any]) -> Any:
    from aiokafka import ConsumerRecord

    value = event.model_dump_json().encode()
    return ConsumerRecord(topic=topic, partition=0, offset=offset, timestamp=0, timestamp_type=0,
                          key=str(event.request_id).encode(), value=value, checksum=None,
                          serialized_key_size=36, serialized_value_size=len(value), headers=[])


async def test_a_batch_handler_applies_the_fresh_events_at_once_and_a_failure_falls_back_per_event(
    schema_pool: Any, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path calls the service's batch handler once with the batch's fresh events, in
    order; when it raises, the batch is applied again per event and only the culprit is
    dead-lettered."""
    _, pool = schema_pool
    calls: list[list[str]] = []

    async def batch(conn: asyncpg.Connection, events: Any) -> None:
        calls.append([e.data.document_number for e in events])
        for ev in events:
            if ev.data.document_number.startswith("R-"):
                raise RejectEvent(f"document number {ev.data.document_number} is cancelled")
        await conn.executemany("INSERT INTO effects VALUES ($1, $2)",
                               [(e.event_id, e.data.document_number) for e in events])

    async def one(conn: asyncpg.Connection, ev: Envelope[Any]) -> None:
        await batch(conn, [ev])

    topic = ns + topics.DOCUMENT_PRINTED
    consumer = EventConsumer(service="printing", group_id="it-batch", pool_provider=lambda: pool,
                             handlers={topics.DOCUMENT_PRINTED: one}, batch_handler=batch,
                             topic_prefix=ns)
    woken: list[str] = []

    class Relay:  # this process's relay of "printing": woken only for a dead letter, once committed
        def wake(self) -> None:
            woken.append("printing")

    monkeypatch.setitem(outbox._relays, "printing", Relay())
    a, b = printed(uuid.uuid4(), "A-1"), printed(uuid.uuid4(), "B-1")
    await consumer.consume_batch([_record(topic, 0, a), _record(topic, 1, b), _record(topic, 2, a)])
    assert calls == [["A-1", "B-1"]]  # once, fresh events only (the repeated A-1 is a duplicate)
    assert consumer.stats.applied == 2 and consumer.stats.duplicates == 1
    assert woken == []

    calls.clear()
    c, bad, d = printed(uuid.uuid4(), "C-1"), printed(uuid.uuid4(), "R-9"), printed(uuid.uuid4(), "D-1")
    await consumer.consume_batch(
        [_record(topic, 3, c), _record(topic, 4, bad), _record(topic, 5, d), _record(topic, 6, b)]
    )
    assert calls == [["C-1", "R-9", "D-1"], ["C-1"], ["R-9"], ["D-1"]]
    numbers = await pool.fetch("SELECT number FROM effects ORDER BY number")
    assert [r["number"] for r in numbers] == ["A-1", "B-1", "C-1", "D-1"]
    reasons = await pool.fetch("SELECT reason FROM dead_letter")
    assert [r["reason"] for r in reasons] == ["RejectEvent: document number R-9 is cancelled"]
    assert woken == ["printing"]
    assert consumer.stats.applied == 4 and consumer.stats.dead_lettered == 1
    assert consumer.stats.duplicates == 2


async def test_a_fact_and_its_events_in_one_statement(database: str, schema_pool: Any) -> None:
    """shared.outbox.queue_cte: the business row and the outbox rows (in order, with the usual
    headers) in one statement; no events, no outbox row. It notifies nobody: a notifying
    transaction commits under a cluster-wide lock (the caller wakes the relay instead)."""
    from shared.outbox import add_event, notify_channel, queue_args, queue_cte

    schema, pool = schema_pool
    woken: list[str] = []
    listener = await asyncpg.connect(database)  # not a pooled one: LISTEN is session state
    try:
        def on_notify(*args: Any) -> None:
            woken.append(args[2])

        await listener.add_listener(notify_channel(schema), on_notify)
        first, second = printed(uuid.uuid4(), "Q-1"), printed(uuid.uuid4(), "Q-2")
        sql = (f"WITH {queue_cte(3)} INSERT INTO effects VALUES ($1, $2) RETURNING number")
        async with pool.acquire() as conn, conn.transaction():
            number = await conn.fetchval(
                sql, first.event_id, "Q", *queue_args([first, second]))
        assert number == "Q"
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(sql, second.event_id, "none", *queue_args([]))
        # the same rows add_event writes, in the events' order
        third = printed(uuid.uuid4(), "Q-3")
        async with pool.acquire() as conn, conn.transaction():
            await add_event(conn, third)
        rows = await pool.fetch("SELECT event_id, topic, key, value, headers FROM outbox ORDER BY id")
        assert [r["event_id"] for r in rows] == [first.event_id, second.event_id, third.event_id]
        assert rows[0]["value"] == first.model_dump_json().encode()
        assert rows[1]["key"] == str(second.request_id)
        assert {r["topic"] for r in rows} == {topics.DOCUMENT_PRINTED}
        assert json.loads(rows[0]["headers"]) == json.loads(rows[2]["headers"]) | {
            "event_id": str(first.event_id), "correlation_id": first.correlation_id}
        assert await pool.fetchval("SELECT count(*) FROM effects") == 2
        await asyncio.sleep(0.3)
        assert woken == []
    finally:
        await listener.close()


async def _queue(pool: Any, number: str) -> Envelope[Any]:
    event = printed(uuid.uuid4(), number)
    async with pool.acquire() as conn, conn.transaction():
        await add_event(conn, event)
    return event


async def test_wake_relay_wakes_the_active_relay_at_once_even_from_another_instance(
    database: str, schema_pool: Any, ns: str
) -> None:
    """shared.outbox.wake_relay after a commit: this process's relay publishes at once (its poll
    is a minute away here). When this process's relay is not the active one, it passes the
    wake-up on with a NOTIFY of its own, which the active one listens to."""
    schema, pool = schema_pool
    slow = {"dsn": database, "schema": schema, "bootstrap_servers": KAFKA, "topic_prefix": ns,
            "poll_interval_s": 60.0}
    active = OutboxRelay(**slow)
    await active.start()
    standby = None
    try:
        await wait_until(lambda: _true(active.is_leader))
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"))
        await _queue(pool, "W-1")
        await asyncio.sleep(0.5)
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 1  # no wake, no publish
        wake_relay(schema)
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), 3.0)

        standby = OutboxRelay(**slow)  # another instance's: this process's relay from now on
        await standby.start()
        await asyncio.sleep(0.5)
        assert not standby.is_leader
        await _queue(pool, "W-2")
        wake_relay(schema)
        await wait_until(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox"), 3.0)
        assert active.published == 2
    finally:
        if standby is not None:
            await standby.stop()
        await active.stop()
