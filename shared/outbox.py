"""Transactional outbox (DESIGN.md section 3): no event is lost.

A service writes its state change and ``add_event`` in one transaction. ``OutboxRelay`` publishes
the rows to Kafka (``acks=all``, idempotent producer) in id order and deletes them once
acknowledged. Exactly one relay per service is active at a time (a PostgreSQL advisory lock), which
keeps per-key order; the others wait to take over.

Waking the relay: the code that queued rows calls :func:`wake_relay` once its transaction has
committed (the hot paths: a registration, a print, a partner callback), which wakes this process's
relay at once (dead letters too, so that ops see them on their topic at once). If that relay is
not the active one, it passes the wake-up on with a ``NOTIFY`` on its own connection, which the
active relay listens to. A wake-up missed is made up for by the relay's poll, every
``OUTBOX_POLL_INTERVAL_S``.

Why not ``pg_notify`` in the writing transaction, as before: PostgreSQL serialises every
committing transaction that has notified, cluster-wide, on one lock held until its commit record
is flushed (``PreCommit_Notify`` in ``async.c``). Every registration, print and callback of all
four services then committed one at a time, one WAL flush each, and queued behind each other on a
saturated machine (bench/README.md, thirteenth round: about 10 backends waiting on that lock on
average at 100 lifecycles/s, and the load generator could not even send 100 a second).

A crash between Kafka's acknowledgement and the delete publishes those rows again: consumers
deduplicate on ``event_id`` (the inbox), so that is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.contracts.events import Envelope
from shared.db.pool import TRANSIENT_DB_ERRORS, advisory_key, connect
from shared.logging import get_logger

log = get_logger(__name__)

# How long one batch may take to be acknowledged (acks=all) before the producer is replaced.
PUBLISH_TIMEOUT_S = 30.0

def notify_channel(schema: str) -> str:
    return f"outbox_{schema}"


def event_headers(event: Envelope[Any]) -> dict[str, str]:
    """Kafka headers repeat routing fields so tools need not parse the value."""
    return {
        "event_type": event.event_type,
        "event_id": str(event.event_id),
        "correlation_id": event.correlation_id,
        "content-type": "application/json",
    }


async def add_event(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    """Queue ``event`` for publishing; call inside the transaction that makes the fact true, and
    :func:`wake_relay` after its commit."""
    await conn.execute(_ADD_ONE, *queue_args([event]))


# This process's relays by schema, for wake_relay().
_relays: dict[str, OutboxRelay] = {}


def wake_relay(schema: str) -> None:
    """Rows were queued in ``schema``'s outbox and committed: wake this process's relay (no-op if
    this process runs none, e.g. a test). Call it after the commit, never before: a relay woken
    earlier reads before the rows are visible, and they wait for its poll."""
    relay = _relays.get(schema)
    if relay is not None:
        relay.wake()


def queue_cte(first: int, *, only_if: str | None = None) -> str:
    """A ``WITH`` list item that queues events in the outbox, for the statement that writes the
    fact the events tell: one round trip instead of two (the outbox row and the business row in
    one statement cost about half the transaction's CPU, shared/notes). The one place in Python
    that knows how an outbox row is written (``add_event`` and ``add_record`` use it too); intake's
    ``register_request`` (migration ``0005_register_without_notify.sql``) writes the same rows
    from the same :func:`queue_args`, in SQL, and must change with it.

    Its parameters are ``$first`` .. ``$first + 4``, given by :func:`queue_args`; zero events
    queue nothing, and neither does an ``only_if`` item of the same ``WITH`` list (a constant CTE
    name, e.g. an ``INSERT ... ON CONFLICT DO NOTHING RETURNING``) that returned no row.
    Data-modifying ``WITH`` items always run, whether the main query reads them or not; the events
    keep their order (outbox ids follow it). The caller wakes the relay after the commit
    (:func:`wake_relay`).
    """
    a = [f"${first + i}" for i in range(5)]
    condition = f" WHERE EXISTS (SELECT FROM {only_if})" if only_if else ""
    return (
        "queued AS (INSERT INTO outbox (event_id, topic, key, value, headers)"
        " SELECT e, t, k, v, h::jsonb FROM unnest("
        f"{a[0]}::uuid[], {a[1]}::text[], {a[2]}::text[], {a[3]}::bytea[], {a[4]}::text[])"
        f" WITH ORDINALITY AS x(e, t, k, v, h, n){condition} ORDER BY n)"
    )


def queue_args(events: Sequence[Envelope[Any]]) -> list[Any]:
    """The parameters of :func:`queue_cte` for ``events``."""
    return [
        [e.event_id for e in events],
        [e.event_type for e in events],
        [str(e.request_id) for e in events],
        [e.model_dump_json().encode() for e in events],
        [json.dumps(event_headers(e)) for e in events],
    ]


_ADD_ONE = f"WITH {queue_cte(1)} SELECT 1"


async def add_record(
    conn: asyncpg.Connection,
    *,
    record_id: uuid.UUID,
    topic: str,
    key: str,
    value: bytes,
    headers: Mapping[str, str],
) -> None:
    """Queue one record that is not a lifecycle event as such (e.g. a dead letter); call
    :func:`wake_relay` after the commit."""
    await conn.execute(_ADD_ONE, [record_id], [topic], [key], [value], [json.dumps(dict(headers))])


class OutboxRelay:
    def __init__(
        self,
        *,
        dsn: str,
        schema: str,
        bootstrap_servers: str,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        linger_s: float = 0.0,
        topic_prefix: str = "",
    ) -> None:
        self._dsn = dsn
        self._linger_s = linger_s
        self._topic_prefix = topic_prefix
        self._schema = schema
        self._bootstrap = bootstrap_servers
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = False
        self.is_leader = False
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        _relays[self._schema] = self
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self) -> None:
        if _relays.get(self._schema) is self:
            del _relays[self._schema]
        self._stopping = True
        self._wake.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer:
            await self._producer.stop()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=2,
                request_timeout_ms=15000,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _run(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                await self._lead_and_relay()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except (KafkaError, *TRANSIENT_DB_ERRORS) as exc:
                self.is_leader = False
                log.warning("outbox relay interrupted, retrying", error=repr(exc), retry_in_s=delay)
                if isinstance(exc, KafkaError | asyncio.TimeoutError):
                    # After a broker restart an idempotent producer can stay wedged (e.g.
                    # OutOfOrderSequenceNumber on every send): start again with a new one.
                    await self._drop_producer()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:  # the relay must never die silently
                self.is_leader = False
                log.exception("outbox relay error, retrying", retry_in_s=delay)
                await self._drop_producer()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    async def _lead_and_relay(self) -> None:
        producer = await self._ensure_producer()
        conn = await connect(self._dsn, self._schema)
        try:
            # This connection's own commits (the deletes of published rows, the NOTIFYs) need not
            # wait for their flush: a delete lost in a crash publishes those rows again, which the
            # consumers' inbox absorbs, and a lost NOTIFY is made up for by the poll.
            await conn.execute("SET synchronous_commit = off")
            channel = notify_channel(self._schema)
            key = advisory_key(f"outbox:{self._schema}")
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                if self._stopping:
                    return
                await self._pass_wakes_on(conn, channel, self._poll_interval_s * 2)
            # Listening only once active: a relay that is not would hear its own NOTIFYs.
            await conn.add_listener(channel, self._on_notify)
            self.is_leader = True
            log.info("outbox relay active", schema=self._schema)
            while not self._stopping:
                self._wake.clear()
                sent = await self._relay_batch(conn, producer)
                if sent < self._batch_size:
                    await self._sleep(self._poll_interval_s)
                    if self._linger_s and not self._stopping:
                        # woken (a commit, or the poll): let the next few ms of commits join its batch
                        # (one read, one produce request and one delete for all of them)
                        await asyncio.sleep(self._linger_s)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await conn.close()

    async def _pass_wakes_on(self, conn: asyncpg.Connection, channel: str, seconds: float) -> None:
        """Not the active relay: for ``seconds``, pass this process's wake-ups on to the one that
        is, by a NOTIFY in a transaction of its own (never in the writer's: see the module's
        docstring)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while not self._stopping and (left := until - loop.time()) > 0:
            await self._sleep(left)
            if self._wake.is_set() and not self._stopping:
                self._wake.clear()
                await conn.execute("SELECT pg_notify($1, '')", channel)

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _relay_batch(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        rows = await conn.fetch(
            "SELECT id, topic, key, value, headers FROM outbox ORDER BY id LIMIT $1",
            self._batch_size,
        )
        if not rows:
            return 0

        async def publish() -> None:
            futures = []
            for row in rows:
                headers = [(k, v.encode()) for k, v in json.loads(row["headers"]).items()]
                futures.append(
                    await producer.send(
                        self._topic_prefix + row["topic"], value=row["value"],
                        key=row["key"].encode(), headers=headers,
                    )
                )
            await asyncio.gather(*futures)

        # Bounded: a producer that never completes (seen after a broker restart) would otherwise
        # hold the relay, and every event of the service, forever.
        await asyncio.wait_for(publish(), PUBLISH_TIMEOUT_S)
        await conn.execute(
            "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
        )
        self.published += len(rows)
        return len(rows)


async def backlog(conn: asyncpg.Connection) -> int:
    """Rows not yet published (ops, health and back-pressure)."""
    return int(await conn.fetchval("SELECT count(*) FROM outbox"))
