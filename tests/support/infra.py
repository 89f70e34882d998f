"""Test helpers that talk to the real local Kafka and PostgreSQL (started by ``make infra-up``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contracts.topics import EVENT_TOPICS
from shared.db.pool import Pool, create_pool, migrate

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
ADMIN_DSN = os.environ.get("DATABASE_URL", "postgresql://ketanmu:ketanmu@127.0.0.1:5432/ketanmu")


@contextlib.asynccontextmanager
async def migrated_pool(dsn: str, schema: str, migrations: Path) -> AsyncIterator[Pool]:
    """A pool on ``schema`` of the database at ``dsn``, with a service's migrations applied."""
    await migrate(dsn, schema, migrations)
    pool = await create_pool(dsn, schema)
    try:
        yield pool
    finally:
        await pool.close()


async def _stop(consumer: AIOKafkaConsumer) -> None:
    # aiokafka re-raises CancelledError when stopped before its coordinator task first ran
    await asyncio.sleep(0.05)
    await consumer.stop()


def dsn_for(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


async def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str, attempts: int = 20) -> None:
    """Drop ``name``, ending the sessions still in it.

    ``WITH (FORCE)`` refuses, for a role that is not superuser, while an autovacuum worker is in
    the database ("must be a member of the role whose process is being terminated": the worker
    has no role), and benchmark and test databases are busy with autovacuum. A plain ``DROP``
    stops the worker itself but refuses while other sessions are connected: try one, then the
    other, until one succeeds."""
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        for attempt in range(attempts):
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                pass  # an autovacuum worker is in it
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except asyncpg.ObjectInUseError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.2)  # a session came or stayed: FORCE again
    finally:
        await conn.close()


async def create_namespace(prefix: str) -> None:
    """Every topic of the contract under ``prefix`` (a test run's own namespace)."""
    from shared.kafka.admin import create_topics

    await create_topics(KAFKA, 6, prefix=prefix)


async def delete_namespace(prefix: str, bootstrap: str | None = None) -> int:
    """Delete every topic whose name starts with ``prefix``: how many, once the broker no longer
    lists them. ``bootstrap`` defaults to ``KAFKA`` as it is at the call: the fault tests point it
    at their own broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    from shared.kafka.admin import await_listed

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap or KAFKA)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
            await await_listed(admin, doomed, listed=False)
        return len(doomed)
    finally:
        await admin.close()


async def partitions(topics: Iterable[str]) -> list[TopicPartition]:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA)
    await producer.start()
    try:
        return [TopicPartition(t, p) for t in topics for p in sorted(await producer.partitions_for(t))]
    finally:
        await producer.stop()


async def end_offsets(topics: Iterable[str] = EVENT_TOPICS) -> dict[TopicPartition, int]:
    tps = await partitions(topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await _stop(consumer)


async def seed_group_at_end(group_id: str, topics: Iterable[str] = EVENT_TOPICS) -> None:
    """A new consumer group starts where the topics end now, not at their whole history.

    Services use ``auto_offset_reset=earliest`` so a new group never misses an event; a test run's
    fresh groups would otherwise replay every earlier run's events into the fresh database.
    """
    offsets = await end_offsets(topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await _stop(consumer)


async def committed(group_id: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await _stop(consumer)


async def read_topics(
    start: dict[TopicPartition, int], *, key: bytes | None = None, topics: Iterable[str] | None = None
) -> list[Any]:
    """Every record from ``start`` offsets up to the current end, optionally of one key."""
    wanted = set(topics) if topics else None
    tps = [tp for tp in start if wanted is None or tp.topic in wanted]
    ends = await end_offsets({tp.topic for tp in tps})
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp])
        remaining = {tp for tp in tps if ends[tp] > start[tp]}
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, recs in batch.items():
                for rec in recs:
                    if key is None or rec.key == key:
                        records.append(rec)
                    if rec.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            if not batch:
                remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await _stop(consumer)
    return records


async def produce(topic: str, value: bytes, key: bytes | None = None, partition: int | None = None,
                  headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition, headers=headers)
    finally:
        await producer.stop()
