"""Consuming lifecycle events: batch, inbox, dead letters, explicit acknowledgement.

The guarantees (DESIGN.md section 3) live here so every service gets them the same way:

* **Offsets are committed only after the effect is durable.** The subscriber uses
  ``AckPolicy.MANUAL``; a batch is acknowledged (its offsets committed) only after the database
  transaction that applied it has committed. The handler never raises, so no later ``ack`` can
  commit past a message that was not applied.
* **No effect happens twice.** Each event's ``(consumer, event_id)`` is inserted in the inbox in the
  same transaction as its effect; a duplicate is skipped. A batch whose events all parse and apply
  goes in one transaction with one inbox insert (the common case), applied by the service's
  ``BatchHandler`` with a few set-based statements for the whole batch when it has one; if any
  event fails, that transaction is rolled back and the batch is applied again one savepoint per
  event, through the per-topic handlers.
* **Poison messages do not block a partition.** A value that does not parse, a newer version, or a
  handler that rejects the event (a broken invariant, a bug) rolls back that event's savepoint; the
  message is written to the service's ``dead_letter`` table and, through the outbox, to its
  dead-letter topic ``dlq.<service>`` with the reason in headers. The batch goes on.
* **Infrastructure errors are retried, never dead-lettered.** If PostgreSQL is unreachable the whole
  batch is retried with backoff, blocking the partitions until it is back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from pydantic import ValidationError

from shared.contracts.events import Envelope, UnsupportedEvent, parse_event
from shared.contracts.topics import dead_letter_topic
from shared.db.pool import TRANSIENT_DB_ERRORS, Pool
from shared.logging import get_logger
from shared.outbox import add_record, wake_relay

log = get_logger(__name__)

Handler = Callable[[asyncpg.Connection, Envelope[Any]], Awaitable[None]]
# Applies a batch's fresh events (in consumed order) with set-based SQL: a few statements per batch
# instead of a few per event. Called on the fast path only; when it raises, the batch is rolled
# back and applied again one event at a time through the per-topic ``Handler``s, which must have
# the same effect (the usual way: the handler calls the batch handler with one event).
BatchHandler = Callable[[asyncpg.Connection, Sequence[Envelope[Any]]], Awaitable[None]]

_DLQ_NS = uuid.UUID("6f1c3c2e-8a53-4a5e-9a57-2f0f1d7e0d11")


class RejectEvent(Exception):
    """Raised by a handler when the event breaks an invariant and can never be applied."""


def _sanitize(record: ConsumerRecord) -> ConsumerRecord:
    """Header values that are not UTF-8 would crash FastStream's parser before our code runs."""
    headers = tuple(
        (k, v if _is_utf8(v) else v.decode("utf-8", "replace").encode()) for k, v in record.headers
    )
    return dataclasses.replace(record, headers=headers)


def _is_utf8(value: bytes | None) -> bool:
    if value is None:
        return True
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


async def _tolerant_parser(records: tuple[ConsumerRecord, ...], original: Any) -> Any:
    # copied only when a header needs it: the usual batch goes through as it came
    if any(not _is_utf8(v) for r in records for _, v in r.headers):
        records = tuple(_sanitize(r) for r in records)
    return await original(records)


async def _no_decode(_: Any) -> None:
    # The handler validates the raw bytes with the contract's models; decoding JSON twice (and
    # FastStream's json.loads failing on a bad body before the handler) is avoided.
    return None


@dataclasses.dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0


class EventConsumer:
    """Applies events from ``handlers.keys()`` topics to one service's database."""

    def __init__(
        self,
        *,
        service: str,
        group_id: str,
        pool_provider: Callable[[], Pool],
        handlers: Mapping[str, Handler],
        batch_handler: BatchHandler | None = None,
        after_commit: Sequence[Callable[[], None]] = (),
        max_records: int = 500,
        batch_timeout_ms: int = 50,
        topic_prefix: str = "",
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
    ) -> None:
        self.service = service
        # Physical topic = prefix + contract name; empty in production (see ServiceSettings).
        self.topic_prefix = topic_prefix
        self.group_id = group_id
        self._pool = pool_provider
        self._handlers = dict(handlers)
        self._batch_handler = batch_handler
        self._after_commit = list(after_commit)
        self._max_records = max_records
        self._batch_timeout_ms = batch_timeout_ms
        self._fetch = {"fetch_min_bytes": fetch_min_bytes, "fetch_max_wait_ms": fetch_max_wait_ms}
        self.stats = ConsumerStats()

    def attach(self, broker: KafkaBroker) -> None:
        subscriber = broker.subscriber(
            *(self.topic_prefix + t for t in self._handlers),
            group_id=self.group_id,
            batch=True,
            max_records=self._max_records,
            batch_timeout_ms=self._batch_timeout_ms,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            parser=_tolerant_parser,
            decoder=_no_decode,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            title=f"{self.service}-events",
            **self._fetch,
        )

        async def on_batch(_body: Any) -> None:
            # The message from FastStream's context, not from its dependency injection: resolving
            # ``Context("message")`` ran a sync function in a worker thread for every batch
            # (thread hand-off, GIL ping-pong: ~8% of a consuming service's CPU in py-spy). The
            # runtime's broker has apply_types=False; the body is our decoder's None.
            message: KafkaMessage = broker.context.get_local("message")
            await self.consume_batch(message.raw_message)
            await message.ack()

        subscriber(on_batch)

    async def consume_batch(self, records: Sequence[ConsumerRecord]) -> None:
        """Apply a batch durably; returns only when it is committed in PostgreSQL.

        Never gives a batch up: an event that cannot be applied is dead-lettered inside
        ``_apply``, so whatever escapes it is the database (or a bug) and the batch is tried
        again. Raising instead would lose it: FastStream would go on with the next batch, whose
        offset commit covers this one (seen when PostgreSQL restarted mid-batch and asyncpg
        raised ``InternalClientError`` on a connection it had just handed back).
        """
        delay = 0.2
        dead_before = self.stats.dead_lettered
        while True:
            try:
                await self._apply(records)
                break
            except TRANSIENT_DB_ERRORS as exc:
                log.warning(
                    "database unavailable, batch will be retried",
                    error=repr(exc),
                    retry_in_s=delay,
                    records=len(records),
                )
            except Exception:
                log.exception("batch not applied, will be retried", retry_in_s=delay,
                              records=len(records))  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.stats.batches += 1
        if self.stats.dead_lettered > dead_before:
            wake_relay(self.service)  # the dead letters' records, committed with the batch
        for callback in self._after_commit:
            callback()

    async def _apply(self, records: Sequence[ConsumerRecord]) -> None:
        outcomes = await self._apply_fast(records)
        if outcomes is None:  # an event that cannot be applied: one savepoint per event
            outcomes = await self._apply_each(records)
        self.stats.applied += outcomes.count("applied")
        self.stats.duplicates += outcomes.count("duplicate")
        self.stats.dead_lettered += outcomes.count("dead")

    async def _apply_fast(self, records: Sequence[ConsumerRecord]) -> list[str] | None:
        """The common case, every event good: one transaction, one inbox INSERT for the whole
        batch, no savepoints. None when an event does not parse or its handler raises (the
        transaction is then rolled back whole and ``_apply_each`` isolates the culprit)."""
        parsed = []
        for record in records:
            topic = record.topic.removeprefix(self.topic_prefix)
            if record.value is None:
                return None
            try:
                parsed.append((topic, parse_event(topic, record.value)))
            except (ValidationError, UnsupportedEvent, ValueError):
                return None
        outcomes: list[str] = []
        try:
            async with self._pool().acquire() as conn, conn.transaction():
                fresh = {
                    r["event_id"]
                    for r in await conn.fetch(
                        # in event_id order: two members briefly sharing partitions during a
                        # rebalance wait for each other instead of deadlocking on the inbox
                        "INSERT INTO inbox (consumer, event_id, topic)"
                        " SELECT $1, e, t FROM unnest($2::uuid[], $3::text[]) AS x(e, t)"
                        " ORDER BY e ON CONFLICT DO NOTHING RETURNING event_id",
                        self.group_id,
                        [event.event_id for _, event in parsed],
                        [topic for topic, _ in parsed],
                    )
                }
                todo: list[tuple[str, Envelope[Any]]] = []
                for topic, event in parsed:
                    if event.event_id not in fresh:  # seen before, or twice in this batch
                        outcomes.append("duplicate")
                        continue
                    fresh.discard(event.event_id)
                    todo.append((topic, event))
                    outcomes.append("applied")
                if self._batch_handler is not None:
                    if todo:
                        await self._batch_handler(conn, [event for _, event in todo])
                else:
                    for topic, event in todo:
                        with structlog.contextvars.bound_contextvars(
                            request_id=str(event.request_id),
                            correlation_id=event.correlation_id,
                            event_id=str(event.event_id),
                            event_type=event.event_type,
                        ):
                            await self._handlers[topic](conn, event)
        except TRANSIENT_DB_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - rolled back; the slow path dead-letters the culprit
            return None
        return outcomes

    async def _apply_each(self, records: Sequence[ConsumerRecord]) -> list[str]:
        async with self._pool().acquire() as conn, conn.transaction():
            return [await self._apply_one(conn, record) for record in records]

    async def _apply_one(self, conn: asyncpg.Connection, record: ConsumerRecord) -> str:
        topic = record.topic.removeprefix(self.topic_prefix)
        try:
            if record.value is None:
                raise UnsupportedEvent("message has no value")
            event = parse_event(topic, record.value)
        except (ValidationError, UnsupportedEvent, ValueError) as exc:
            await self._dead_letter(conn, record, _reason(exc))
            return "dead"
        with structlog.contextvars.bound_contextvars(
            request_id=str(event.request_id),
            correlation_id=event.correlation_id,
            event_id=str(event.event_id),
            event_type=event.event_type,
        ):
            try:
                async with conn.transaction():  # a savepoint: one bad event rolls back alone
                    fresh = await conn.fetchval(
                        "INSERT INTO inbox (consumer, event_id, topic) VALUES ($1, $2, $3)"
                        " ON CONFLICT DO NOTHING RETURNING true",
                        self.group_id,
                        event.event_id,
                        topic,
                    )
                    if not fresh:
                        return "duplicate"
                    await self._handlers[topic](conn, event)
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - anything else can never succeed as it is
                log.error("event rejected, dead-lettered", reason=_reason(exc))
                await self._dead_letter(conn, record, _reason(exc))
                return "dead"
        return "applied"

    async def _dead_letter(self, conn: asyncpg.Connection, record: ConsumerRecord, reason: str) -> None:
        row_id = await conn.fetchval(
            'INSERT INTO dead_letter (topic, partition, "offset", key, value, reason)'
            " VALUES ($1, $2, $3, $4, $5, $6)"
            ' ON CONFLICT (topic, partition, "offset") DO NOTHING RETURNING id',
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            reason,
        )
        if row_id is None:  # already dead-lettered before a crash: nothing twice
            return
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers if v is not None}
        headers.update(
            {
                "dlq-reason": reason[:1000],
                "dlq-original-topic": record.topic.removeprefix(self.topic_prefix),
                "dlq-original-partition": str(record.partition),
                "dlq-original-offset": str(record.offset),
                "dlq-consumer": self.group_id,
            }
        )
        await add_record(
            conn,
            record_id=uuid.uuid5(
                _DLQ_NS, f"{self.group_id}/{record.topic}/{record.partition}/{record.offset}"
            ),
            topic=dead_letter_topic(self.service),
            key=(record.key or b"").decode("utf-8", "replace"),
            value=record.value or b"",
            headers=headers,
        )
        log.warning(
            "message dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason[:300],
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<value>'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid event: {problems}"
    return f"{type(exc).__name__}: {exc}"
