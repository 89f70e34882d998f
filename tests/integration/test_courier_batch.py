"""Courier's SQL against a real database: a consumed batch is applied with set-based statements
(the rows must be those of applying the events one by one, in any order, and a bad event must be
dead-lettered alone); a partner callback is read, then deduplicated and stored in one statement
that writes only if the shipment is still as read."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from services.courier import events as courier_events
from services.courier import webhooks
from services.courier.known_shipments import KnownShipments
from services.courier.partners import PartnerEvent
from services.courier.webhooks import apply_fact, apply_facts
from shared.contracts import topics
from shared.contracts.events import Envelope
from shared.db.pool import Pool, create_pool, migrate
from shared.http import Problem
from shared.kafka.consumer import EventConsumer
from tests.support.events import T0, printed, registered

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).parents[2] / "services" / "courier" / "migrations"
@pytest.fixture
async def pool(database: str) -> Any:
    schema = f"c_{uuid.uuid4().hex[:8]}"
    await migrate(database, schema, MIGRATIONS)
    pool = await create_pool(database, schema)
    yield pool
    await pool.close()


# Columns set to now() differ between transactions: compared as "set or not".
_STATE = """
SELECT request_id, correlation_id, registered, partner, document_type, recipient_name,
    recipient_phone, address, cod_fee, requirement_documents, printed_at, document_number, status,
    to_book_since IS NOT NULL AS to_book_since_set
FROM shipments ORDER BY request_id
"""


async def _state(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(_STATE)]


async def _reset(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE shipments")


async def test_a_batch_in_any_order_ends_like_one_event_at_a_time(pool: Pool) -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    # the second registration and the second print of `a` came later: no-ops one by one
    batch = [
        registered(a, "corr-a-r1", name="Siti"),
        printed(a, "corr-a-p1", "N-1", minutes=1),
        registered(a, "corr-a-r2", name="Budi", fee=15000, docs=[]),
        printed(a, "corr-a-p2", "N-2", minutes=2),
        printed(b, "corr-b", "N-3"),
        registered(c, "corr-c"),
    ]
    seen_correlations = set()
    async with pool.acquire() as conn:
        for order in itertools.permutations(batch[:4]):
            events = [*order, *batch[4:]]
            await _reset(conn)
            async with conn.transaction():
                for event in events:
                    await courier_events.apply_batch(conn, [event])
            one_by_one = await _state(conn)

            await _reset(conn)
            async with conn.transaction():
                await courier_events.apply_batch(conn, events)
            assert await _state(conn) == one_by_one, [e.correlation_id for e in events]
            seen_correlations.add(one_by_one[[r["request_id"] for r in one_by_one].index(a)]
                                  ["correlation_id"])

    # the test did exercise the order-dependent column
    assert seen_correlations == {"corr-a-r1", "corr-a-p1", "corr-a-r2", "corr-a-p2"}
    async with pool.acquire() as conn:
        rows = {r["request_id"]: r for r in await _state(conn)}
    assert rows[a]["status"] == "to_book" and rows[a]["to_book_since_set"]
    assert rows[b]["status"] == "awaiting_registration"
    assert rows[c]["status"] == "awaiting_print"


async def test_a_batch_completes_shipments_that_existed_before(pool: Pool) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    before = [registered(a, "corr-a"), printed(b, "corr-b", "N-b")]
    batch = [printed(a, "corr-a", "N-a"), registered(b, "corr-b", name="Budi"),
             registered(a, "corr-a", name="late duplicate")]
    async with pool.acquire() as conn:
        await courier_events.apply_batch(conn, before)
        async with conn.transaction():
            for event in batch:
                await courier_events.apply_batch(conn, [event])
        one_by_one = await _state(conn)
        await _reset(conn)
        await courier_events.apply_batch(conn, before)
        async with conn.transaction():
            await courier_events.apply_batch(conn, batch)
        assert await _state(conn) == one_by_one
    assert [r["status"] for r in one_by_one] == ["to_book", "to_book"]
    assert {r["recipient_name"] for r in one_by_one} == {"Siti", "Budi"}


def _record(event: Envelope[Any], offset: int, value: bytes | None = None) -> ConsumerRecord:
    value = value if value is not None else event.model_dump_json().encode()
    return ConsumerRecord(
        topic=event.event_type, partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=str(event.request_id).encode(), value=value, checksum=None,
        serialized_key_size=36, serialized_value_size=len(value), headers=(),
    )


async def test_a_bad_event_in_a_batch_is_dead_lettered_alone(pool: Pool) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    # valid for the contract, refused by PostgreSQL (text cannot hold NUL): only the database
    # statement fails, so the batch path fails and the fallback must isolate this one event
    poison = printed(b, "corr-b", "N-\x00-b")
    good = [registered(a, "corr-a"), printed(a, "corr-a", "N-a"), registered(b, "corr-b")]
    consumer = EventConsumer(
        service="courier",
        group_id="courier-test",
        pool_provider=lambda: pool,
        handlers=courier_events.handlers(),
        batch_handler=courier_events.apply_batch,
    )
    records = [_record(good[0], 0), _record(poison, 1), _record(good[1], 2), _record(good[2], 3)]
    await consumer.consume_batch(records)
    assert (consumer.stats.applied, consumer.stats.dead_lettered) == (3, 1)
    async with pool.acquire() as conn:
        rows = {r["request_id"]: r for r in await _state(conn)}
        dead = await conn.fetch('SELECT topic, "offset", reason FROM dead_letter')
        inbox = await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'courier-test'")
    assert rows[a]["status"] == "to_book"
    assert rows[b]["status"] == "awaiting_print" and rows[b]["printed_at"] is None
    assert [(d["topic"], d["offset"]) for d in dead] == [(topics.DOCUMENT_PRINTED, 1)]
    assert inbox == 3

    # the same batch again (a redelivery): nothing applied twice, nothing dead-lettered twice
    await consumer.consume_batch(records)
    assert (consumer.stats.applied, consumer.stats.dead_lettered) == (3, 2)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM dead_letter") == 1


# ---- partner callbacks: read + dedupe check, then state + dedupe row + anomalies + custody in one -


def _fact(kind: str, event_id: str, waybill: str, **kw: Any) -> PartnerEvent:
    return PartnerEvent(partner="jnt", partner_event_id=event_id, waybill=waybill, kind=kind,  # type: ignore[arg-type]
                        occurred_at=kw.pop("at", T0), **kw)


async def test_callbacks_store_state_anomalies_custody_and_count_resends(pool: Pool) -> None:
    a = uuid.uuid4()
    async with pool.acquire() as conn:
        await courier_events.apply_batch(conn, [registered(a, "corr-a"), printed(a, "corr-a", "N")])
        await conn.execute("UPDATE shipments SET status = 'booked', waybill = 'JX1' WHERE request_id = $1", a)
        schema = await conn.fetchval("SELECT current_schema()")

        with pytest.raises(Problem) as unknown:
            async with conn.transaction():
                await apply_fact(conn, schema, _fact("picked_up", "jnt:0", "NOPE"))
        assert unknown.value.status == 404

        # delivered with no pickup scan: the implied handover first, an anomaly, the custody step
        delivered = _fact("delivered", "jnt:1", "JX1", at=T0 + timedelta(hours=5),
                          received_by="Siti", documents_collected=True)
        async with conn.transaction():
            await apply_fact(conn, schema, delivered)
        # a wrong COD amount: applied, flagged
        async with conn.transaction():
            await apply_fact(conn, schema, _fact("cod_collected", "jnt:2", "JX1", cod_amount=25000,
                                                 at=T0 + timedelta(hours=5)))
        # the late pickup scan corrects handed_at; the delivery resent twice is only counted
        async with conn.transaction():
            await apply_fact(conn, schema, _fact("picked_up", "jnt:3", "JX1", at=T0 + timedelta(hours=1)))
        for _ in range(2):
            async with conn.transaction():
                await apply_fact(conn, schema, delivered)

        ship = await conn.fetchrow("SELECT * FROM shipments WHERE request_id = $1", a)
        anomalies = await conn.fetch("SELECT detail FROM shipment_anomalies ORDER BY id")
        custody = await conn.fetch("SELECT step, actor, detail, at FROM originals_custody")
        callbacks = await conn.fetch(
            "SELECT partner_event_id, request_id, times_received, cod_amount"
            " FROM partner_callbacks ORDER BY partner_event_id")
        outbox = await conn.fetch("SELECT topic FROM outbox ORDER BY id")

    assert ship["status"] == "completed" and ship["handed"] and ship["delivered"] and ship["cod_paid"]
    assert ship["handed_at"] == T0 + timedelta(hours=1)
    assert ship["cod_amount_collected"] == 25000 and ship["received_by"] == "Siti"
    assert ship["originals_status"] == "with_courier"
    assert ship["originals_due_at"] == T0 + timedelta(hours=5, days=7)
    assert [r["detail"] for r in anomalies] == [
        "delivered before any pickup scan",
        "COD collected Rp 25000 differs from the fee Rp 20000",
    ]
    assert [tuple(r) for r in custody] == [
        ("collected_at_door", "kurir jnt (resi JX1)", "diterima oleh Siti", T0 + timedelta(hours=5))
    ]
    assert [(r["partner_event_id"], r["request_id"], r["times_received"], r["cod_amount"])
            for r in callbacks] == [
        ("jnt:1", a, 3, None), ("jnt:2", a, 1, 25000), ("jnt:3", a, 1, None)
    ]
    assert [r["topic"] for r in outbox] == [
        topics.HANDED_TO_COURIER, topics.DELIVERED, topics.COD_PAID
    ]


async def test_a_shipment_without_originals_gets_no_custody_step(pool: Pool) -> None:
    a = uuid.uuid4()
    async with pool.acquire() as conn:
        await courier_events.apply_batch(
            conn, [registered(a, "corr-a", docs=[]), printed(a, "corr-a", "N")]
        )
        await conn.execute("UPDATE shipments SET status = 'booked', waybill = 'JX2' WHERE request_id = $1", a)
        schema = await conn.fetchval("SELECT current_schema()")
        async with conn.transaction():
            await apply_fact(conn, schema, _fact("picked_up", "jnt:p", "JX2"))
            await apply_fact(conn, schema, _fact("delivered", "jnt:d", "JX2", received_by="Budi"))
        ship = await conn.fetchrow("SELECT * FROM shipments WHERE request_id = $1", a)
        assert await conn.fetchval("SELECT count(*) FROM originals_custody") == 0
        assert await conn.fetchval("SELECT count(*) FROM shipment_anomalies") == 0
    assert ship["status"] == "delivered" and ship["originals_status"] == "none"
    assert ship["documents_collected"] is None


async def _booked(
    conn: asyncpg.Connection, request_id: uuid.UUID, waybill: str,
    known: KnownShipments | None = None,
) -> None:
    """A shipment booked as ``waybill``; with ``known``, remembered as the booking does."""
    await courier_events.apply_batch(
        conn, [registered(request_id, f"corr-{waybill}"), printed(request_id, "corr", "N-" + waybill)]
    )
    row = await conn.fetchrow(
        "UPDATE shipments SET status = 'booked', waybill = $2 WHERE request_id = $1 RETURNING *",
        request_id, waybill,
    )
    if known is not None:
        known.remember_booked("jnt", waybill, row)


class _Reads:
    """A connection counting the callbacks' reads of their shipment."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.reads = conn, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self.reads += sql == webhooks._READ
        return await self.conn.fetchrow(sql, *args)


async def test_a_known_shipment_is_stored_without_a_read_and_ends_the_same(pool: Pool) -> None:
    """The callbacks of a parcel this process booked decide on what it wrote, not on a read,
    and leave the same rows as the read path; a resent one is still found seen (one read)."""
    known = KnownShipments()
    read_path, known_path = uuid.uuid4(), uuid.uuid4()
    results = {}
    async with pool.acquire() as conn:
        schema = await conn.fetchval("SELECT current_schema()")
        for request_id, waybill, with_known in ((read_path, "JR1", None), (known_path, "JK1", known)):
            await _booked(conn, request_id, waybill, with_known)
            counted = _Reads(conn)
            facts = [
                _fact("picked_up", f"{waybill}:p", waybill, at=T0),
                _fact("cod_collected", f"{waybill}:c", waybill, cod_amount=25000,
                      at=T0 + timedelta(hours=2)),
                _fact("delivered", f"{waybill}:d", waybill, received_by="Siti",
                      documents_collected=True, at=T0 + timedelta(hours=2)),
            ]
            for fact in [*facts, facts[-1]]:  # the delivery sent twice
                await apply_fact(counted, schema, fact, known=with_known)  # type: ignore[arg-type]
            ship = dict(await conn.fetchrow(
                "SELECT status, handed, cod_paid, delivered, returned, failed_attempts, handed_at,"
                " cod_paid_at, cod_amount_collected, delivered_at, received_by,"
                " documents_collected, originals_status, originals_due_at"
                " FROM shipments WHERE request_id = $1", request_id))
            callbacks = [tuple(r) for r in await conn.fetch(
                "SELECT split_part(partner_event_id, ':', 2), kind, times_received, cod_amount"
                " FROM partner_callbacks WHERE waybill = $1 ORDER BY 1", waybill)]
            events = [r["topic"] for r in await conn.fetch(
                "SELECT topic FROM outbox WHERE key = $1 ORDER BY id", str(request_id))]
            anomalies = [r["detail"] for r in await conn.fetch(
                "SELECT detail FROM shipment_anomalies WHERE request_id = $1", request_id)]
            results[waybill] = (ship, callbacks, events, anomalies, counted.reads)
    *read_rows, reads = results["JR1"]
    *known_rows, known_reads = results["JK1"]
    assert known_rows == read_rows
    assert read_rows[0]["status"] == "completed" and read_rows[1][-1] == ("p", "picked_up", 1, None)
    assert read_rows[2] == [topics.HANDED_TO_COURIER, topics.COD_PAID, topics.DELIVERED]
    assert (reads, known_reads) == (4, 1)  # the resent delivery: stored nothing, read, seen


async def test_a_stale_known_shipment_is_read_again_and_then_known_as_stored(pool: Pool) -> None:
    """Another instance applied the pickup: this process's entry still says booked. Its store
    writes nothing; the callback is read, decided and stored once, and the entry follows."""
    known = KnownShipments()
    a = uuid.uuid4()
    async with pool.acquire() as conn:
        schema = await conn.fetchval("SELECT current_schema()")
        await _booked(conn, a, "JS1", known)
        await apply_fact(conn, schema, _fact("picked_up", "JS1:p", "JS1"))  # elsewhere: no entry
        counted = _Reads(conn)
        await apply_fact(counted, schema, _fact("cod_collected", "JS1:c", "JS1", cod_amount=20000),  # type: ignore[arg-type]
                         known=known)
        events = [r["topic"] for r in await conn.fetch("SELECT topic FROM outbox ORDER BY id")]
        ship = await conn.fetchrow("SELECT status, handed, cod_paid FROM shipments")
    assert counted.reads == 1
    assert events == [topics.HANDED_TO_COURIER, topics.COD_PAID]
    assert tuple(ship) == ("cod_paid", True, True)
    entry = known.get("jnt", "JS1")
    assert entry is not None
    assert (entry["status"], entry["handed"], entry["cod_paid"]) == ("cod_paid", True, True)


@pytest.mark.parametrize("with_known", [False, True], ids=["read", "known"])
async def test_concurrent_callbacks_of_one_parcel_apply_each_fact_once(
    pool: Pool, with_known: bool
) -> None:
    """Pickup, COD and delivery of each parcel, each sent twice, all at once on their own
    connections: every store races the others of its parcel (compare-and-set, read again). With
    the shipments known as booked, every racer starts from the same (soon stale) entry."""
    import asyncio

    parcels = {uuid.uuid4(): f"JC{i}" for i in range(12)}
    known = KnownShipments() if with_known else None
    async with pool.acquire() as conn:
        for request_id, waybill in parcels.items():
            await _booked(conn, request_id, waybill, known)
        schema = await conn.fetchval("SELECT current_schema()")

    async def send(fact: PartnerEvent) -> None:
        async with pool.acquire() as conn:
            await apply_fact(conn, schema, fact, known=known)

    facts = [
        _fact(kind, f"jnt:{waybill}:{kind}", waybill, received_by="Siti", documents_collected=True)
        if kind == "delivered" else _fact(kind, f"jnt:{waybill}:{kind}", waybill)
        for waybill in parcels.values()
        for kind in ("picked_up", "cod_collected", "delivered")
    ]
    await asyncio.gather(*(send(f) for f in facts * 2))

    async with pool.acquire() as conn:
        ships = await conn.fetch("SELECT * FROM shipments WHERE request_id = ANY($1)", list(parcels))
        callbacks = await conn.fetch("SELECT partner_event_id, times_received FROM partner_callbacks")
        events = await conn.fetch("SELECT key, topic FROM outbox")
        anomalies = await conn.fetchval("SELECT count(*) FROM shipment_anomalies")
        custody = await conn.fetchval("SELECT count(*) FROM originals_custody")
    assert {r["status"] for r in ships} == {"completed"}
    assert all(r["handed"] and r["cod_paid"] and r["delivered"] for r in ships)
    assert sorted((r["partner_event_id"], r["times_received"]) for r in callbacks) == sorted(
        (f.partner_event_id, 2) for f in facts
    )
    assert sorted((r["key"], r["topic"]) for r in events) == sorted(
        (str(rid), t) for rid in parcels
        for t in (topics.HANDED_TO_COURIER, topics.COD_PAID, topics.DELIVERED)
    )
    # whatever order the facts won in, a delivery before its pickup scan is the one anomaly there
    # can be, once at most per parcel; the custody step starts once
    assert anomalies <= len(parcels)
    assert custody == len(parcels)


async def test_an_event_id_stored_meanwhile_for_another_parcel_changes_nothing_here(
    pool: Pool,
) -> None:
    """A partner reusing an event id for two parcels at once: the second store waits on the
    first's dedupe row, then must leave its own shipment untouched (found seen, only counted)."""
    import asyncio

    a, b = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn, pool.acquire() as other:
        await _booked(conn, a, "JA1")
        await _booked(conn, b, "JB1")
        schema = await conn.fetchval("SELECT current_schema()")
        first = other.transaction()
        await first.start()  # the first parcel's store, not committed yet
        await other.execute(
            "INSERT INTO partner_callbacks (partner_event_id, partner, waybill, kind, occurred_at,"
            " request_id) VALUES ('jnt:same', 'jnt', 'JA1', 'delivered', now(), $1)", a)
        second = asyncio.create_task(
            apply_fact(conn, schema, _fact("delivered", "jnt:same", "JB1", received_by="Budi"))
        )
        await asyncio.sleep(0.3)
        assert not second.done()  # waiting on the first's dedupe row
        await first.commit()
        await second
        ship = await conn.fetchrow("SELECT * FROM shipments WHERE request_id = $1", b)
        events = await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", str(b))
        custody = await conn.fetchval(
            "SELECT count(*) FROM originals_custody WHERE request_id = $1", b)
        times = await conn.fetchval(
            "SELECT times_received FROM partner_callbacks WHERE partner_event_id = 'jnt:same'")
    assert ship["status"] == "booked" and not ship["delivered"] and not ship["handed"]
    assert ship["originals_status"] != "with_courier"
    assert (events, custody, times) == (0, 0, 2)


async def test_a_callback_overtaking_our_booking_waits_for_it_instead_of_a_404(
    database: str, pool: Pool
) -> None:
    a = uuid.uuid4()
    async with pool.acquire() as conn:
        await courier_events.apply_batch(conn, [registered(a, "corr-a"), printed(a, "corr", "N")])
        schema = await conn.fetchval("SELECT current_schema()")
    # One connection in all: the wait must not hold it, the booking needs it to store its waybill
    # (holding it, overtaking callbacks took the whole pool under load and the bookings waited).
    one = await create_pool(database, schema, min_size=1, max_size=1)
    waits = []
    try:

        async def booking_stores_meanwhile(waybill: str) -> bool:
            waits.append(waybill)
            await one.execute(
                "UPDATE shipments SET status = 'booked', waybill = 'JW1' WHERE request_id = $1", a)
            return True

        await asyncio.wait_for(
            apply_facts(one, schema, [_fact("picked_up", "jnt:w1", "JW1")],
                        settle=booking_stores_meanwhile),
            10,
        )
        assert waits == ["JW1"]
        assert await one.fetchval("SELECT handed FROM shipments WHERE request_id = $1", a)

        async def nothing_in_flight(waybill: str) -> bool:
            waits.append("none")
            return False

        async def in_flight_but_not_this_one(waybill: str) -> bool:
            waits.append("other")
            return True

        for settle in (nothing_in_flight, in_flight_but_not_this_one):
            with pytest.raises(Problem) as unknown:
                await apply_facts(one, schema, [_fact("picked_up", "jnt:w2", "NOPE")],
                                  settle=settle)
            assert unknown.value.status == 404
        assert waits == ["JW1", "none", "other"]  # one wait per fact at most
    finally:
        await one.close()


class _ChangedAfterRead:
    """A connection on which another writer changes the shipment right after the first read."""

    def __init__(self, conn: asyncpg.Connection, other: asyncpg.Connection, change: str) -> None:
        self.conn, self.other, self.change, self.reads = conn, other, change, 0

    async def fetchrow(self, *args: Any) -> Any:
        row = await self.conn.fetchrow(*args)
        self.reads += 1
        if self.reads == 1:
            await self.other.execute(self.change)
        return row

    async def fetchval(self, *args: Any) -> Any:
        return await self.conn.fetchval(*args)

    async def execute(self, *args: Any) -> Any:
        return await self.conn.execute(*args)


async def test_a_shipment_changed_between_read_and_store_is_read_and_decided_again(
    pool: Pool,
) -> None:
    a = uuid.uuid4()
    async with pool.acquire() as conn, pool.acquire() as other:
        await _booked(conn, a, "JR1")
        schema = await conn.fetchval("SELECT current_schema()")
        # ops cancel the shipment while the pickup callback is being decided
        racing = _ChangedAfterRead(
            conn, other, f"UPDATE shipments SET status = 'cancelled' WHERE request_id = '{a}'"
        )
        await apply_fact(racing, schema, _fact("picked_up", "jnt:r1", "JR1"))  # type: ignore[arg-type]
        anomalies = await conn.fetch("SELECT detail FROM shipment_anomalies WHERE request_id = $1", a)
        topics_out = await conn.fetch("SELECT topic FROM outbox WHERE key = $1", str(a))
    assert racing.reads == 2  # the first decision was not stored: the cancel came first
    assert [r["detail"] for r in anomalies] == [
        "picked_up reported for a shipment cancelled at the partner"
    ]
    assert [r["topic"] for r in topics_out] == [topics.HANDED_TO_COURIER]


class _MeetAfterFirstStatement:
    """A connection that, after its first statement, waits (at most 1 s) for the other one to
    get there too: both then hold what their first statement locked."""

    def __init__(self, conn: asyncpg.Connection, arrived: list[int], both: Any) -> None:
        self.conn, self.arrived, self.both, self.n = conn, arrived, both, 0

    async def execute(self, *args: Any) -> str:
        import asyncio

        result = await self.conn.execute(*args)
        self.n += 1
        if self.n == 1:
            self.arrived.append(1)
            if len(self.arrived) == 2:
                self.both.set()
            try:
                await asyncio.wait_for(self.both.wait(), 1.0)
            except TimeoutError:
                pass  # the other one is waiting for us: go on
        return result


async def test_two_instances_with_opposite_mixes_of_a_batch_do_not_deadlock(
    pool: Pool,
) -> None:
    """Instance A has r2's registration and r1's print, instance B the opposite (the two topics'
    partitions sit with different instances): without the batch's advisory locks, A held r2 and
    waited for r1 while B held r1 and waited for r2 (DeadlockDetectedError, the batch retried)."""
    import asyncio

    r1, r2 = sorted([uuid.uuid4(), uuid.uuid4()])
    arrived: list[int] = []
    both = asyncio.Event()

    async def instance(batch: list[Envelope[Any]]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await courier_events.apply_batch(
                _MeetAfterFirstStatement(conn, arrived, both), batch)  # type: ignore[arg-type]

    await asyncio.gather(
        instance([registered(r2, "c2"), printed(r1, "c1", "N-1")]),
        instance([registered(r1, "c1"), printed(r2, "c2", "N-2")]),
    )
    rows = await pool.fetch("SELECT request_id, status FROM shipments ORDER BY request_id")
    assert [(r["request_id"], r["status"]) for r in rows] == [(r1, "to_book"), (r2, "to_book")]


class _HangsForFirst:
    """A partner whose answer to the first booking never comes (until released); others at once."""

    name = "jnt"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.first: str | None = None

    async def book(self, request: Any) -> Any:
        from services.courier.partners.base import Booking

        if self.first is None:
            self.first = request.order_ref
        if request.order_ref == self.first:
            await self.release.wait()
        return Booking(partner="jnt", waybill=f"JW-{request.order_ref[:8]}",
                       order_ref=request.order_ref)


async def test_a_slow_booking_holds_up_only_itself(pool: Pool) -> None:
    """A booking the partner is slow to answer must not hold up the bookings due after it (until
    2026-11-22 the worker booked a claimed batch and waited for all of it before claiming again)."""
    from types import SimpleNamespace

    from services.courier.booking import partner_loop
    from services.courier.domain import PartnerBreaker

    wakers: dict[str, asyncio.Event] = {}
    rt = SimpleNamespace(
        pool=pool, extras={}, waker=lambda n: wakers.setdefault(n, asyncio.Event()),
        settings=SimpleNamespace(booking_concurrency=8, booking_claim_s=60,
                                 booking_give_up_after_h=24, booking_retry_start_s=1,
                                 booking_retry_cap_s=60),
    )
    partner = _HangsForFirst()
    slow, later = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        await courier_events.apply_batch(conn, [registered(slow, "c1"), printed(slow, "c1", "N1")])
    loop = asyncio.create_task(partner_loop(rt, partner, PartnerBreaker()))  # type: ignore[arg-type]
    try:
        for _ in range(100):
            if partner.first:
                break
            await asyncio.sleep(0.05)
        assert partner.first == str(slow)  # its booking is on the wire, unanswered
        async with pool.acquire() as conn:
            await courier_events.apply_batch(
                conn, [registered(later, "c2"), printed(later, "c2", "N2")])
        wakers["booking:jnt"].set()  # as a consumed batch does
        status = None
        for _ in range(100):
            status = await pool.fetchval("SELECT status FROM shipments WHERE request_id = $1", later)
            if status == "booked":
                break
            await asyncio.sleep(0.05)
        assert status == "booked"
        assert await pool.fetchval(
            "SELECT status FROM shipments WHERE request_id = $1", slow) == "to_book"
        partner.release.set()
        for _ in range(100):
            if await pool.fetchval(
                    "SELECT status FROM shipments WHERE request_id = $1", slow) == "booked":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the slow booking was never stored")
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def _updates(conn: asyncpg.Connection) -> tuple[int, int]:
    """(rows updated, of them in place: HOT) in ``shipments`` by this backend and not yet
    reported (the current transaction's, and earlier ones' until the backend's next report):
    compare two readings inside one transaction."""
    row = await conn.fetchrow(
        "SELECT pg_stat_get_xact_tuples_updated(c.oid), pg_stat_get_xact_tuples_hot_updated(c.oid)"
        " FROM pg_class c WHERE c.oid = 'shipments'::regclass")
    return row[0], row[1]


async def _counted(conn: asyncpg.Connection, work: Any) -> tuple[int, int]:
    """(rows updated, in place) in ``shipments`` by ``work()``, run in one transaction."""
    async with conn.transaction():
        before = await _updates(conn)
        await work()
        after = await _updates(conn)
    return after[0] - before[0], after[1] - before[1]


async def test_the_booking_claim_pickup_and_cod_update_a_shipment_in_place(pool: Pool) -> None:
    """Migration 0005: no index uses a column that the booking's claim, a pickup or a COD
    changes, so PostgreSQL updates the row where it is (HOT: no new index entries). Before, the
    queue's and retention's indexes named `status` and `updated_at`: every callback wrote an entry
    into each of the seven indexes. The booking's store (the waybill) and the delivery
    (`delivered_at`, the originals) still do, as they must."""
    from services.courier import booking

    parcels = {uuid.uuid4(): f"JH{i}" for i in range(4)}
    async with pool.acquire() as conn:
        schema = await conn.fetchval("SELECT current_schema()")
        for request_id in parcels:
            await courier_events.apply_batch(
                conn, [registered(request_id, "corr"), printed(request_id, "corr", f"N-{request_id}")])
        claimed: list[asyncpg.Record] = []

        async def claim() -> None:
            claimed.extend(await conn.fetch(booking._CLAIM, "jnt", 10, 60.0))

        assert await _counted(conn, claim) == (4, 4)
        assert len(claimed) == 4
        for request_id, waybill in parcels.items():
            await conn.execute("UPDATE shipments SET status = 'booked', waybill = $2"
                               " WHERE request_id = $1", request_id, waybill)

        async def pickups_and_cods() -> None:
            for waybill in parcels.values():
                await apply_fact(conn, schema, _fact("picked_up", f"{waybill}:p", waybill))
                await apply_fact(conn, schema, _fact("cod_collected", f"{waybill}:c", waybill,
                                                     cod_amount=20000))

        async def deliveries() -> None:
            for waybill in parcels.values():
                await apply_fact(conn, schema, _fact("delivered", f"{waybill}:d", waybill,
                                                     received_by="Siti"))

        assert await _counted(conn, pickups_and_cods) == (8, 8)
        assert await _counted(conn, deliveries) == (4, 0)  # delivered_at is indexed
        owed = await conn.fetch("SELECT bookable, erasable_since FROM shipments")
        await conn.execute("UPDATE shipments SET originals_status = 'received'")  # the office
        received = await conn.fetch("SELECT erasable_since, updated_at FROM shipments")
    # the generated columns: out of the booking queue; retention's once no originals are owed
    assert [tuple(r) for r in owed] == [(False, None)] * 4
    assert all(r["erasable_since"] == r["updated_at"] for r in received)


async def test_the_booking_queue_and_retention_use_their_indexes(pool: Pool) -> None:
    """Their queries name the generated columns the partial indexes are on (migration 0005): with
    2,000 delivered shipments of the partner and 5 to book, the claim and the release walk the
    queue's index, and retention its own. A query that said `status = 'to_book'` again could not
    use the queue's index (it took the partner's, reading every delivered shipment)."""
    from services.courier import booking, retention

    await pool.execute(
        "INSERT INTO shipments (request_id, correlation_id, partner, status, delivered, delivered_at,"
        " originals_status, updated_at) SELECT gen_random_uuid(), 'c', 'jnt',"
        " CASE WHEN n <= 5 THEN 'to_book' ELSE 'delivered' END, n > 5, now(),"
        " CASE WHEN n <= 5 THEN 'awaiting_delivery' ELSE 'with_courier' END, now()"
        " FROM generate_series(1, 2005) AS n")
    await pool.execute("ANALYZE shipments")
    async with pool.acquire() as conn:
        plans = {
            name: "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
            for name, sql, args in (("claim", booking._CLAIM, ("jnt", 10, 60.0)),
                                    ("release", booking._RELEASE_BACKLOG, ("jnt",)),
                                    ("erase", retention.SHIPMENTS.sql, (T0, 100)))
        }
    assert "shipments_to_book" in plans["claim"], plans["claim"]
    assert "shipments_to_book" in plans["release"], plans["release"]
    assert "shipments_to_erase" in plans["erase"], plans["erase"]
