"""Intake's set-based SQL on real PostgreSQL (no Kafka, no HTTP): a consumed batch applied at once
ends where applying its events one by one ends; an unknown request is dead-lettered alone; the
registration draws another tracking code when one is taken, and costs one statement."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from pydantic import BaseModel

import services.intake
from deploy.local.demo import sample_request
from services.intake import events as intake_events
from services.intake import registration
from services.intake.inputs import RegistrationIn
from services.intake.settings import IntakeSettings
from shared import outbox
from shared.contracts import topics
from shared.contracts.events import (
    CodPaid,
    Delivered,
    DeliveryFailed,
    DocumentPrinted,
    Envelope,
    HandedToCourier,
    RequestRejected,
    new_event,
)
from shared.db.pool import Pool
from shared.kafka.consumer import EventConsumer
from tests.support.infra import migrated_pool

pytestmark = pytest.mark.integration

MIGRATIONS = Path(services.intake.__file__).parent / "migrations"
SCHEMA = f"intake_b_{uuid.uuid4().hex[:8]}"
# One time for every event: the timeline then falls back to its insertion order (id), so the
# tests see whether rows are inserted in consumed order.
AT = datetime.now(UTC) + timedelta(hours=1)  # after every registration of the run


@pytest.fixture(scope="module")
async def pool(database: str) -> AsyncIterator[Pool]:
    async with migrated_pool(database, SCHEMA, MIGRATIONS) as pool:
        yield pool


SETTINGS = IntakeSettings()
WEB = registration.Caller(channel="web", intake_via="web", causation_id="it")


def _kk_request() -> dict[str, Any]:
    return sample_request(random.Random()) | {"document_type": "kk"}  # a fresh NIK each time


async def register(pool: Pool, body: dict[str, Any] | None = None) -> uuid.UUID:
    async with pool.acquire() as conn:
        done = await registration.register(
            conn,
            settings=SETTINGS,
            schema=SCHEMA,
            body=RegistrationIn.model_validate(body or _kk_request()),
            caller=WEB,
        )
    return done.request_id


def event(event_type: str, request_id: uuid.UUID, data: BaseModel) -> Envelope[Any]:
    return new_event(event_type, request_id=request_id, correlation_id=str(request_id),
                     causation_id="it", producer="it", data=data, occurred_at=AT)  # fmt: skip


def printed(rid: uuid.UUID) -> Envelope[Any]:
    return event(topics.DOCUMENT_PRINTED, rid,
                 DocumentPrinted(document_number="N-1", printed_at=AT, operator="op"))  # fmt: skip


def handed(rid: uuid.UUID) -> Envelope[Any]:
    return event(topics.HANDED_TO_COURIER, rid,
                 HandedToCourier(partner="pos", waybill="P1", cod_amount=20000, handed_at=AT))  # fmt: skip


def cod_paid(rid: uuid.UUID) -> Envelope[Any]:
    return event(topics.COD_PAID, rid,
                 CodPaid(partner="pos", waybill="P1", amount=20000, paid_at=AT))  # fmt: skip


def delivered(rid: uuid.UUID) -> Envelope[Any]:
    return event(topics.DELIVERED, rid, Delivered(partner="pos", waybill="P1", delivered_at=AT,
                                                  received_by="Siti", documents_collected=True))  # fmt: skip


def rejected(rid: uuid.UUID) -> Envelope[Any]:
    return event(topics.REQUEST_REJECTED, rid,
                 RequestRejected(reason="berkas tidak cocok", rejected_at=AT, operator="op"))  # fmt: skip


def failed(rid: uuid.UUID) -> Envelope[Any]:
    return event(topics.DELIVERY_FAILED, rid, DeliveryFailed(partner="pos", waybill="P1",
                                                             failed_at=AT, reason="tutup", attempt=1))  # fmt: skip


# Per request, its events in the (mixed) order they are consumed: topics have no order between them.
STORIES = {
    "delivered first, then the rest": [delivered, cod_paid, printed, handed],
    "paid while with the courier": [printed, handed, cod_paid],
    "printed after rejection": [rejected, printed],
    "handed after a failed attempt": [failed, handed],
    "paid after delivery": [printed, delivered, cod_paid],
}
EXPECTED = {  # status, cod_paid, finished
    "delivered first, then the rest": ("delivered", True, True),
    "paid while with the courier": ("handed_to_courier", True, False),
    "printed after rejection": ("rejected", False, True),
    "handed after a failed attempt": ("delivery_failed", False, False),
    "paid after delivery": ("delivered", True, True),
}


def interleave(per_request: dict[str, list[Envelope[Any]]]) -> list[Envelope[Any]]:
    """Round-robin across requests, each request's own events in their story's order."""
    queues = [list(evs) for evs in per_request.values()]
    out: list[Envelope[Any]] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


async def state(pool: Pool, rid: uuid.UUID) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM requests WHERE request_id = $1", rid)
    timeline = await pool.fetch(
        "SELECT event_type, detail, note FROM request_timeline WHERE request_id = $1"
        " ORDER BY occurred_at, id",
        rid,
    )
    return {
        "status": row["status"],
        "cod_paid": row["cod_paid"],
        "finished": row["finished_at"] is not None,
        "updated": row["updated_at"] != row["created_at"],
        "timeline": [(t["event_type"], json.loads(t["detail"]), t["note"]) for t in timeline],
    }


async def test_a_batch_ends_where_its_events_one_by_one_end(pool: Pool) -> None:
    batched = {name: await register(pool) for name in STORIES}
    single = {name: await register(pool) for name in STORIES}
    batch = interleave({n: [make(batched[n]) for make in story] for n, story in STORIES.items()})
    one_by_one = interleave(
        {n: [make(single[n]) for make in story] for n, story in STORIES.items()}
    )

    async with pool.acquire() as conn, conn.transaction():
        await intake_events.apply_batch(conn, batch)
    async with pool.acquire() as conn, conn.transaction():
        for e in one_by_one:
            await intake_events.record_event(conn, e)

    for name, story in STORIES.items():
        got, want = await state(pool, batched[name]), await state(pool, single[name])
        assert got == want, name
        assert (got["status"], got["cod_paid"], got["finished"]) == EXPECTED[name], name
        assert got["updated"], name
        # registration's entry, then the story in consumed order
        assert [t[0] for t in got["timeline"]] == ["request-registered"] + [
            make(batched[name]).event_type for make in story
        ], name
    notes = [t[2] for t in (await state(pool, batched["printed after rejection"]))["timeline"]]
    assert notes == [None, None, "document-printed after the request was rejected"]
    detail = (await state(pool, batched["paid while with the courier"]))["timeline"][2][1]
    assert detail == {"partner": "pos", "waybill": "P1", "cod_amount": 20000}


async def test_the_status_is_not_updated_when_no_event_moves_it(pool: Pool) -> None:
    rid = await register(pool)
    async with pool.acquire() as conn, conn.transaction():
        await intake_events.apply_batch(conn, [rejected(rid)])
    before = await pool.fetchval("SELECT updated_at FROM requests WHERE request_id = $1", rid)
    async with pool.acquire() as conn, conn.transaction():
        await intake_events.apply_batch(conn, [printed(rid), handed(rid)])
    after = await state(pool, rid)
    assert after["status"] == "rejected" and len(after["timeline"]) == 4
    assert (
        await pool.fetchval("SELECT updated_at FROM requests WHERE request_id = $1", rid) == before
    )


def _record(topic: str, offset: int, ev: Envelope[Any]) -> ConsumerRecord:
    value = ev.model_dump_json().encode()
    return ConsumerRecord(topic=topic, partition=0, offset=offset, timestamp=0, timestamp_type=0,
                          key=str(ev.request_id).encode(), value=value, checksum=None,
                          serialized_key_size=36, serialized_value_size=len(value), headers=[])  # fmt: skip


async def test_the_consumer_applies_a_batch_at_once_and_dead_letters_only_an_unknown_request(
    pool: Pool,
) -> None:
    calls: list[int] = []

    async def batch_handler(conn: asyncpg.Connection, evs: Sequence[Envelope[Any]]) -> None:
        calls.append(len(evs))
        await intake_events.apply_batch(conn, evs)

    consumer = EventConsumer(service="intake", group_id=f"it-{uuid.uuid4().hex[:6]}",
                             pool_provider=lambda: pool, handlers=intake_events.handlers(),
                             batch_handler=batch_handler)  # fmt: skip
    a, b = await register(pool), await register(pool)
    good = [printed(a), delivered(b), handed(a), printed(b)]
    await consumer.consume_batch([_record(e.event_type, i, e) for i, e in enumerate(good)])
    assert calls == [4]  # the whole batch in one call: the fast path
    assert (await state(pool, a))["status"] == "handed_to_courier"
    assert (await state(pool, b))["status"] == "delivered"

    calls.clear()
    stranger = uuid.uuid4()
    mixed = [cod_paid(a), printed(stranger), delivered(a)]
    await consumer.consume_batch([_record(e.event_type, 10 + i, e) for i, e in enumerate(mixed)])
    assert calls == [3]  # tried at once, rolled back, then one savepoint per event
    assert consumer.stats.applied == 6 and consumer.stats.dead_lettered == 1
    dead = await pool.fetch('SELECT "offset", reason FROM dead_letter')
    assert [(d["offset"], d["reason"]) for d in dead] == [
        (11, f"RejectEvent: unknown request {stranger}")
    ]
    after = await state(pool, a)
    assert (after["status"], after["cod_paid"]) == ("delivered", True)
    assert [t[0] for t in after["timeline"]][-2:] == [topics.COD_PAID, topics.DELIVERED]
    assert (
        await pool.fetchval("SELECT count(*) FROM request_timeline WHERE request_id = $1", stranger)
        == 0
    )


# ---- registration -------------------------------------------------------------------------


async def test_a_taken_tracking_code_is_drawn_again(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await register(pool)
    taken = await pool.fetchval("SELECT tracking_code FROM requests WHERE request_id = $1", first)
    draws = iter([taken, taken, "KTM-ZZZZ-2222"])
    monkeypatch.setattr(registration, "new_tracking_code", lambda: next(draws))
    second = await register(pool)
    row = await pool.fetchrow("SELECT tracking_code FROM requests WHERE request_id = $1", second)
    assert row["tracking_code"] == "KTM-ZZZZ-2222"
    [queued] = await pool.fetch("SELECT value FROM outbox WHERE key = $1", str(second))
    assert json.loads(queued["value"])["data"]["tracking_code"] == "KTM-ZZZZ-2222"
    timeline = await pool.fetch(
        "SELECT event_type FROM request_timeline WHERE request_id = $1", second
    )
    assert [t["event_type"] for t in timeline] == [topics.REQUEST_REGISTERED]
    assert await pool.fetchval("SELECT count(*) FROM requests WHERE tracking_code = $1", taken) == 1


async def test_a_taken_tracking_code_is_drawn_again_inside_the_callers_transaction(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the WhatsApp conversation registers: inside its own transaction, which goes on after."""
    first = await register(pool)
    taken = await pool.fetchval("SELECT tracking_code FROM requests WHERE request_id = $1", first)
    draws = iter([taken, "KTM-ZZZZ-3333"])
    monkeypatch.setattr(registration, "new_tracking_code", lambda: next(draws))
    async with pool.acquire() as conn, conn.transaction():
        done = await registration.register(conn, settings=SETTINGS, schema=SCHEMA,
                                           body=RegistrationIn.model_validate(_kk_request()),
                                           caller=WEB)
        assert await conn.fetchval("SELECT count(*) FROM requests WHERE request_id = $1",
                                   done.request_id) == 1  # the caller's transaction is usable
    assert done.tracking_code == "KTM-ZZZZ-3333"
    assert await pool.fetchval("SELECT tracking_code FROM requests WHERE request_id = $1",
                               done.request_id) == "KTM-ZZZZ-3333"


async def test_no_free_tracking_code_writes_nothing(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await register(pool)
    taken = await pool.fetchval("SELECT tracking_code FROM requests WHERE request_id = $1", first)
    monkeypatch.setattr(registration, "new_tracking_code", lambda: taken)
    counts = "SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM outbox),"
    counts += " (SELECT count(*) FROM request_timeline), (SELECT sum(used) FROM daily_capacity)"
    before = await pool.fetchrow(counts)
    with pytest.raises(RuntimeError, match="no unused tracking code"):
        await register(pool)
    assert await pool.fetchrow(counts) == before


class _Counting:
    """A connection that counts the statements sent through it, and a transaction opened on it as
    one more (its BEGIN; its COMMIT is not counted)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.statements: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if name == "transaction":
            self.statements.append("BEGIN")
        if name in {"execute", "executemany", "fetch", "fetchrow", "fetchval"}:

            def counted(sql: str, *args: Any, **kw: Any) -> Any:
                self.statements.append(" ".join(sql.split())[:60])
                return attr(sql, *args, **kw)

            return counted
        return attr


async def test_a_registration_costs_one_statement_and_so_does_a_replay(pool: Pool) -> None:
    body = RegistrationIn.model_validate(_kk_request())
    for expected in (1, 1):  # register_request: the lock, the lookups, the counter, the writes
        async with pool.acquire() as raw:
            conn = _Counting(raw)
            done = await registration.register(
                conn,  # type: ignore[arg-type]
                settings=SETTINGS,
                schema=SCHEMA,
                body=body,
                caller=WEB,
                idempotency_key="k-" + str(id(body)),
            )
        assert len(conn.statements) == expected, conn.statements
    assert done.replayed


async def test_a_registration_wakes_the_relay_after_its_commit_and_notifies_nobody(
    pool: Pool, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay is woken in-process once the row is committed (shared.outbox.wake_relay), not by
    pg_notify in the registration's transaction: PostgreSQL serialises the commits of notifying
    transactions cluster-wide (bench/README.md, thirteenth round). Inside a caller's transaction
    the caller wakes it, after its own commit."""
    seen: list[int] = []

    class Relay:
        def wake(self) -> None:  # the row must be there for the relay's read
            seen.append(len(seen))

    monkeypatch.setitem(outbox._relays, SCHEMA, Relay())
    notified: list[str] = []
    listener = await asyncpg.connect(database)  # not a pooled one: LISTEN is session state
    try:
        await listener.add_listener(outbox.notify_channel(SCHEMA), lambda *a: notified.append(a[2]))
        rid = await register(pool)
        assert seen == [0]
        assert await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE key = $1", str(rid)) == 1  # committed
        async with pool.acquire() as conn, conn.transaction():
            await registration.register(conn, settings=SETTINGS, schema=SCHEMA,
                                        body=RegistrationIn.model_validate(_kk_request()),
                                        caller=WEB)
        assert seen == [0]  # not woken before the caller's commit
        await asyncio.sleep(0.3)
        assert notified == []
    finally:
        await listener.close()
