"""Notify's sender loop on real PostgreSQL: answers stored in batches, claims not after every send,
a refused store retried and never resent, stores flushed at shutdown, a recipient's order.

The loop runs alone (no Kafka, no HTTP) with a stand-in Cloud API that counts what it was asked
to send; rows are written as the consumer writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.notify import repository, sender
from services.notify.repository import Accepted, mark_sent, mark_sent_many
from services.notify.settings import NotifySettings
from shared.contracts import topics
from shared.db.pool import Pool, create_pool, migrate

pytestmark = pytest.mark.integration

MIGRATIONS = Path(sender.__file__).parent / "migrations"
ORDER = [topics.REQUEST_REGISTERED, topics.DOCUMENT_PRINTED, topics.HANDED_TO_COURIER,
         topics.COD_PAID, topics.DELIVERED]


class CloudApi:
    """Accepts every message (once ``gate`` is open; with ``spacing``, answers one at a time that
    far apart); remembers each request."""

    def __init__(self, gate: asyncio.Event | None = None, spacing: float = 0.0) -> None:
        self.gate = gate
        self.spacing = spacing
        self._one_at_a_time = asyncio.Lock()
        self.sent: list[str] = []  # callback references, in the order the requests left
        self.wamids: dict[str, str] = {}

    async def _send(self, ref: str | None) -> str:
        assert ref is not None
        self.sent.append(ref)
        if self.gate is not None:
            await self.gate.wait()
        if self.spacing:
            async with self._one_at_a_time:
                await asyncio.sleep(self.spacing)
        wamid = f"wamid.{uuid.uuid4().hex}"
        self.wamids[ref] = wamid
        return wamid

    async def send_text(self, to: str, body: str, callback_data: str | None = None) -> str:
        return await self._send(callback_data)

    async def send_template(self, to: str, template: str, params: list[str],
                            language: str = "id", callback_data: str | None = None) -> str:
        return await self._send(callback_data)


class CountingPool:
    """The pool, counting claims and transactions (``acquire``: the stores, give-ups)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.claims = 0
        self.acquires = 0

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        if "SKIP LOCKED" in sql:
            self.claims += 1
        return await self.pool.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        return await self.pool.execute(sql, *args)

    def acquire(self) -> Any:
        self.acquires += 1
        return self.pool.acquire()


class Rt:
    """What the sender loop uses of a ``Runtime``."""

    def __init__(self, pool: Pool, api: CloudApi, **settings: Any) -> None:
        self.pool = CountingPool(pool)
        self.settings = NotifySettings(
            whatsapp_timeout_s=1.0, send_claim_s=5.0, send_confirm_wait_s=5.0, **settings
        )
        self.extras: dict[str, Any] = {"whatsapp": api}
        self.wakers: dict[str, asyncio.Event] = {}
        self.schema = "notify"

    def waker(self, name: str) -> asyncio.Event:
        return self.wakers.setdefault(name, asyncio.Event())


@pytest.fixture
async def pool(database: str) -> AsyncIterator[Pool]:
    schema = f"notify_{uuid.uuid4().hex[:8]}"
    await migrate(database, schema, MIGRATIONS)
    pool = await create_pool(database, schema, 2, 10)
    yield pool
    async with pool.acquire() as conn:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await pool.close()


async def add_request(pool: Pool, events: list[str]) -> uuid.UUID:
    """A registered request and one pending message per event (in this order of facts)."""
    request_id = uuid.uuid4()
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO recipients (request_id, phone, name, tracking_code, document_type,"
            " partner, cod_fee, requirement_documents, registered_at)"
            " VALUES ($1, '+6281234560001', 'Siti', 'KTM-TEST', 'ktp_el', 'jnt', 20000,"
            " '[]'::jsonb, $2)",
            request_id, now,
        )
        for i, event_type in enumerate(events):
            await add_message(conn, request_id, event_type, now + timedelta(seconds=i))
    return request_id


async def add_message(
    conn: Any, request_id: uuid.UUID, event_type: str, occurred_at: datetime
) -> uuid.UUID:
    event_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data,"
        " source) VALUES ($1, $2, $3, $4, '{}'::jsonb, '{}')",
        event_id, request_id, event_type, occurred_at,
    )
    return event_id


@contextlib.asynccontextmanager
async def running(rt: Rt) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sender.sender_loop(rt))  # type: ignore[arg-type]
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(predicate: Callable[[], Any], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def all_sent(pool: Pool, count: int) -> Callable[[], Any]:
    async def check() -> bool:
        n = await pool.fetchval("SELECT count(*) FROM notifications WHERE status = 'sent'")
        return bool(n == count)

    return check


class _Recording:
    """A connection that records the statements and transactions sent through it."""

    def __init__(self, conn: Any, calls: list[str]) -> None:
        self._conn, self._calls = conn, calls

    def __getattr__(self, name: str) -> Any:
        if name in {"execute", "executemany", "fetch", "fetchrow", "fetchval", "transaction"}:
            self._calls.append(name)
        return getattr(self._conn, name)


class StoreSpy:
    """Wraps ``mark_sent_many`` in the sender: batch sizes, the statements of each store, a hook
    that runs before a store writes, and refusals to inject (a store that writes nothing)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: list[BaseException] | None = None):
        self.batches: list[int] = []
        self.calls: list[list[str]] = []  # per store: the statements and transactions it sent
        self.fail = list(fail or [])
        self.hook: Callable[[Any], Any] | None = None
        monkeypatch.setattr(sender, "mark_sent_many", self)

    async def __call__(self, conn: Any, sent: list[Accepted]) -> bool:
        self.batches.append(len(sent))
        if self.hook is not None:  # after the answers were queued, before they are stored
            await self.hook(conn)
        if self.fail:  # the database refuses this store: nothing is written
            raise self.fail.pop(0)
        self.calls.append(["called inside a transaction"] if conn.is_in_transaction() else [])
        return await mark_sent_many(_Recording(conn, self.calls[-1]), sent)


async def test_sends_that_complete_together_are_stored_in_one_statement(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    api = CloudApi(gate)
    rt = Rt(pool, api, send_concurrency=16)
    spy = StoreSpy(monkeypatch)
    for _ in range(12):
        await add_request(pool, [topics.REQUEST_REGISTERED])
    async with running(rt):
        await until(lambda: asyncio.sleep(0, len(api.sent) == 12))
        before = rt.pool.acquires
        gate.set()
        await until(all_sent(pool, 12))
        assert spy.batches == [12]
        assert spy.calls == [["fetch"]]  # one UPDATE for the twelve, no BEGIN and COMMIT
        assert rt.pool.acquires - before == 1
    rows = await pool.fetch("SELECT * FROM notifications")
    assert sorted(api.sent) == sorted(f"{r['event_id']}/applicant" for r in rows)  # once each
    for r in rows:
        assert r["wamid"] == api.wamids[f"{r['event_id']}/applicant"]
        assert r["kind"] == "template" and r["template"] and r["body"]
        assert r["sent_at"] is not None and r["source"] is None and r["error"] is None
        assert r["claim_token"] is None and r["claimed_until"] is None and r["attempts"] == 1


async def test_a_store_the_database_refused_is_retried_and_never_resent(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = CloudApi()
    rt = Rt(pool, api)
    spy = StoreSpy(
        monkeypatch,
        fail=[ConnectionResetError("db away"), asyncpg.exceptions.ConnectionDoesNotExistError()],
    )
    for _ in range(5):
        await add_request(pool, [topics.REQUEST_REGISTERED])
    async with running(rt):
        await until(all_sent(pool, 5))
    assert len(spy.batches) >= 3  # two refused (nothing written), then stored
    assert len(api.sent) == len(set(api.sent)) == 5  # no message sent twice
    rows = await pool.fetch("SELECT event_id, wamid FROM notifications")
    assert {r["wamid"] for r in rows} == set(api.wamids.values())


async def test_stopping_waits_for_the_sends_and_stores_their_answers(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    api = CloudApi(gate)
    rt = Rt(pool, api)
    StoreSpy(monkeypatch, fail=[ConnectionResetError("db away at shutdown")])
    for _ in range(4):
        await add_request(pool, [topics.REQUEST_REGISTERED])
    task = asyncio.create_task(sender.sender_loop(rt))  # type: ignore[arg-type]
    await until(lambda: asyncio.sleep(0, len(api.sent) == 4))
    task.cancel()  # the service stops with four sends on the wire
    await asyncio.sleep(0.05)
    gate.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await all_sent(pool, 4)()  # stored before the loop returned, despite a refused store
    assert len(api.sent) == 4


async def test_a_recipients_messages_go_out_in_order_without_waiting_for_the_timer(
    pool: Pool,
) -> None:
    api = CloudApi()
    rt = Rt(pool, api)
    await add_request(pool, ORDER)
    events = [r["event_id"] for r in await pool.fetch(
        "SELECT event_id FROM notifications ORDER BY occurred_at")]
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with running(rt):
        await until(all_sent(pool, len(ORDER)))
        elapsed = loop.time() - start
    assert api.sent == [f"{e}/applicant" for e in events]
    # each message is due only once the previous one is stored: the store wakes the sender
    # (the 1 s timer would take 4 s)
    assert elapsed < 0.8, elapsed


async def test_a_message_noted_while_its_predecessor_is_being_stored_is_not_late(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer commits the next message (and wakes the sender) after the answer was queued
    and before it is stored: the sender's claim cannot see it due (its predecessor is not stored
    yet), so the store must wake it. (Since the store is one statement without a transaction, the
    narrower window, a message committed while that statement runs, cannot be paused from here;
    the store wakes the sender for it too: a claim ran while the store was pending.)"""
    api = CloudApi()
    rt = Rt(pool, api)
    spy = StoreSpy(monkeypatch)
    request_id = await add_request(pool, [topics.REQUEST_REGISTERED])
    noted: dict[str, float] = {}

    async def consumer_commits_meanwhile(conn: Any) -> None:
        if noted:
            return
        async with pool.acquire() as other:
            await add_message(other, request_id, topics.DOCUMENT_PRINTED, datetime.now(UTC))
        rt.waker("sender").set()  # the consumer's after-commit wake
        await asyncio.sleep(0.1)  # the sender claims now, while this store is not committed
        noted["at"] = asyncio.get_running_loop().time()

    spy.hook = consumer_commits_meanwhile
    async with running(rt):
        await until(all_sent(pool, 2))
        late = asyncio.get_running_loop().time() - noted["at"]
    assert rt.pool.claims >= 2
    assert late < 0.5, late  # not left to the 1 s timer


async def test_a_claim_is_not_made_after_every_finished_send(pool: Pool) -> None:
    api = CloudApi(spacing=0.01)  # a backlog, and answers 10 ms apart
    rt = Rt(pool, api, send_concurrency=8)
    for _ in range(32):
        await add_request(pool, [topics.REQUEST_REGISTERED])
    async with running(rt):
        await until(all_sent(pool, 32))
    assert len(api.sent) == 32
    # a claim once half the slots are free (4 sends), not after each of the 32
    assert rt.pool.claims <= 14, rt.pool.claims



async def test_a_finished_send_frees_its_slot_at_once(pool: Pool) -> None:
    """Every slot busy: the loop waits for a send to finish (not for the 1 s timer) to claim."""
    api = CloudApi()
    rt = Rt(pool, api, send_concurrency=1)
    for _ in range(5):
        await add_request(pool, [topics.REQUEST_REGISTERED])  # five recipients: no store wakes
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with running(rt):
        await until(all_sent(pool, 5))
        elapsed = loop.time() - start
    assert len(api.sent) == 5
    assert elapsed < 0.8, elapsed  # the timer alone would take 4 s

# ---- mark_sent_many writes what mark_sent writes ------------------------------------------------


async def test_mark_sent_many_writes_what_mark_sent_writes(pool: Pool) -> None:
    """Twin rows, one stored by each: answers, callbacks that came first (folded), a free text
    refused outside the window (re-armed as a template), a second wamid (not taken)."""
    cases = ["plain", "delivered_first", "refused_text", "second_wamid"]
    twins: dict[str, list[int]] = {}
    for case in cases:
        ids = []
        for _ in range(2):
            await add_request(pool, [topics.REQUEST_REGISTERED, topics.DOCUMENT_PRINTED])
            ids.append(await pool.fetchval(
                "SELECT id FROM notifications WHERE event_type = $1 ORDER BY id DESC LIMIT 1",
                topics.REQUEST_REGISTERED))
        twins[case] = ids
    answers: dict[int, Accepted] = {}
    for case, ids in twins.items():
        for nid in ids:
            wamid = f"wamid.{case}.{nid}"
            kind = "text" if case == "refused_text" else "template"
            answers[nid] = Accepted(nid, None, wamid, kind, None if kind == "text" else "t", "b")
            if case == "delivered_first":
                await _status(pool, wamid, "delivered")
            elif case == "refused_text":
                error = {"code": 131047, "title": "Re-engagement", "message": None, "details": None}
                await _status(pool, wamid, "failed", [error])
            elif case == "second_wamid":
                await pool.execute("UPDATE notifications SET wamid = $2 WHERE id = $1",
                                   nid, f"wamid.first.{nid}")
    async with pool.acquire() as conn:
        async with conn.transaction():  # mark_sent: inside a transaction
            for case, (one, _) in twins.items():
                a = answers[one]
                await mark_sent(conn, one, a.wamid, kind=a.kind, template=a.template, body=a.body)
        # as the sender calls it: outside a transaction (it opens one for the rows it leaves)
        due = await mark_sent_many(conn, [answers[many] for _, many in twins.values()])
    assert due  # a successor waits (document-printed) and a text was re-armed

    columns = ("status", "kind", "template", "body", "error", "source", "claim_token",
               "wa_status", "wa_error", "force_template")
    for case, (one, many) in twins.items():
        a = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1", one)
        b = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1", many)
        assert a is not None and b is not None
        assert {c: a[c] for c in columns} == {c: b[c] for c in columns}, case
        assert (a["sent_at"] is None) == (b["sent_at"] is None), case
        for row, nid in ((a, one), (b, many)):
            expected = {"second_wamid": f"wamid.first.{nid}", "refused_text": None}
            assert row["wamid"] == expected.get(case, answers[nid].wamid), case
    delivered = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1",
                                    twins["delivered_first"][1])
    assert delivered["status"] == "sent" and delivered["wa_status"] == "delivered"
    refused = await pool.fetchrow("SELECT * FROM notifications WHERE id = $1",
                                  twins["refused_text"][1])
    assert refused["status"] == "pending" and refused["force_template"]


async def _status(pool: Pool, wamid: str, status: str,
                  errors: list[dict[str, Any]] | None = None) -> None:
    await pool.execute(
        "INSERT INTO whatsapp_statuses (wamid, status, occurred_at, errors)"
        " VALUES ($1, $2, now(), $3::jsonb)",
        wamid, status, json.dumps(errors or []),
    )



def _scans_of(plan: dict[str, Any], alias: str) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Alias") == alias else []
    for child in plan.get("Plans", []):
        found += _scans_of(child, alias)
    return found


async def test_per_recipient_lookups_stay_lookups_when_a_backlog_outgrows_the_statistics(
    pool: Pool,
) -> None:
    """The claim's "no earlier unsent message" and mark_sent's "has a next message" look up one
    recipient's unsent rows by index, even when the statistics were taken before a backlog of
    1,500 unsent rows appeared (they scanned every unsent row for each row: 5-7 ms at 50/s)."""
    for _ in range(10):
        request_id = await add_request(pool, ORDER)
    await pool.execute("UPDATE notifications SET status = 'sent'")
    await pool.execute("ANALYZE notifications")  # statistics: nothing waiting
    await pool.execute(
        "INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data,"
        " source) SELECT gen_random_uuid(), r, t, now(), '{}'::jsonb, '{}'"
        " FROM (SELECT gen_random_uuid() AS r FROM generate_series(1, 300)) AS q,"
        " unnest($1::text[]) AS t", ORDER)
    claim = await pool.fetchval(
        "EXPLAIN (FORMAT JSON) " + sender._CLAIM, 16, 60.0, uuid.uuid4(), 30.0)
    mark = await pool.fetchval(
        "EXPLAIN (FORMAT JSON) " + repository._MARK_SENT_MANY, [1, 2], ["w1", "w2"],
        [None, None], [None, None], [None, None])
    _assert_plans_look_up(json.loads(claim)[0]["Plan"], json.loads(mark)[0]["Plan"])
    assert request_id  # (the sent rows only served the statistics)


def _assert_plans_look_up(claim: dict[str, Any], mark: dict[str, Any]) -> None:
    for plan in (claim, mark):
        lookups = _scans_of(plan, "e")
        assert lookups, plan
        for scan in lookups:  # each one recipient's rows, found by index
            assert re.search(r"request_id = n(_\d+)?\.request_id", scan.get("Index Cond", "")), scan
    (outer,) = [s for s in _scans_of(claim, "n_1")
                if s.get("Index Name") == "notifications_due_in_order"]
    assert "next_attempt_at" in outer["Index Cond"]  # the claim still walks the ordered index
    (stored,) = [s for s in _scans_of(mark, "n") if "Scan" in s["Node Type"]]
    assert stored.get("Index Name") == "notifications_pkey", stored  # the rows by their ids


async def test_the_sender_pool_plans_the_claim_and_the_store_once_with_the_same_lookups(
    pool: Pool, database: str
) -> None:
    """The sender's own connections (sender.SENDER_POOL_SETTINGS) take a generic plan from the
    first call: on the service's pool the batch store was replanned at every call and the claim
    at most. The generic plans keep the lookups of the test above, with a backlog the statistics
    have not seen."""
    for _ in range(10):
        await add_request(pool, ORDER)
    await pool.execute("UPDATE notifications SET status = 'sent'")
    await pool.execute("ANALYZE notifications")
    await pool.execute(
        "INSERT INTO notifications (event_id, request_id, event_type, occurred_at, event_data,"
        " source) SELECT gen_random_uuid(), r, t, now(), '{}'::jsonb, '{}'"
        " FROM (SELECT gen_random_uuid() AS r FROM generate_series(1, 300)) AS q,"
        " unnest($1::text[]) AS t", ORDER)
    schema = await pool.fetchval("SELECT current_schema()")
    own = await create_pool(database, schema, 1, 1, server_settings=sender.SENDER_POOL_SETTINGS)
    try:
        async with own.acquire() as conn:
            await conn.execute("PREPARE claim(integer, float8, uuid, float8) AS " + sender._CLAIM)
            await conn.execute("PREPARE mark(bigint[], text[], text[], text[], text[]) AS "
                               + repository._MARK_SENT_MANY)
            claim = await conn.fetchval(
                "EXPLAIN (FORMAT JSON) EXECUTE claim(16, 60.0, gen_random_uuid(), 30.0)")
            mark = await conn.fetchval("EXPLAIN (FORMAT JSON) EXECUTE mark('{1,2}', '{w1,w2}',"
                                       " '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}')")
            _assert_plans_look_up(json.loads(claim)[0]["Plan"], json.loads(mark)[0]["Plan"])
            async with conn.transaction():
                for _ in range(3):
                    await conn.fetch(sender._CLAIM, 16, 60.0, uuid.uuid4(), 30.0)
                    await mark_sent_many(conn, [Accepted(1, uuid.uuid4(), "w1", "text", None, "")])
                plans = await conn.fetch(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement = ANY($1::text[])",
                    [sender._CLAIM, repository._MARK_SENT_MANY])
                raise _Rollback
    except _Rollback:
        pass
    finally:
        await own.close()
    # asyncpg's prepared statements: three calls each, all on the one plan made for them
    assert [tuple(p) for p in plans] == [(3, 0), (3, 0)], plans


class _Rollback(Exception):
    pass


async def test_a_claim_updates_its_rows_in_place(pool: Pool) -> None:
    """Claiming (pending -> sending) changes no indexed column, so PostgreSQL updates the rows in
    place (HOT: no new index entries). When the partial indexes named `status`, every claim wrote
    an entry into each of the table's indexes: the pipeline's heaviest statement (migration 0007)."""
    for _ in range(4):
        await add_request(pool, ORDER)
    async with pool.acquire() as conn, conn.transaction():
        claimed = await conn.fetch(sender._CLAIM, 16, 60.0, uuid.uuid4(), 30.0)
        updated, in_place = await conn.fetchrow(
            "SELECT pg_stat_get_xact_tuples_updated(c.oid), pg_stat_get_xact_tuples_hot_updated(c.oid)"
            " FROM pg_class c WHERE c.oid = 'notifications'::regclass")
    assert len(claimed) == 4  # the first message of each request: the others wait for it
    assert (updated, in_place) == (4, 4)
    unsent = await pool.fetchval("SELECT count(*) FROM notifications WHERE unsent")
    assert unsent == 4 * len(ORDER)  # `sending` is still unsent


async def test_the_service_claims_and_stores_on_its_planned_once_pool(database: str) -> None:
    """The wiring: notify's start gives the sender a pool of its own whose connections plan
    once (sender.SENDER_POOL_SETTINGS), the loop's claim and store use it, and stop closes it."""
    import types

    from services.notify import app as notify_app

    settings = NotifySettings(database_url=database)
    schema = settings.db_schema  # the service's own: "notify"
    await migrate(database, schema, MIGRATIONS)
    wakers: dict[str, asyncio.Event] = {}
    rt = types.SimpleNamespace(
        settings=settings, extras={}, pool=object(),
        waker=lambda name: wakers.setdefault(name, asyncio.Event()))
    await notify_app._start(rt)  # type: ignore[arg-type]
    try:
        own = sender.statements_pool(rt)  # type: ignore[arg-type]
        assert own is rt.extras["sender_pool"] and own is not rt.pool
        async with own.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            assert await conn.fetchval("SHOW search_path") == schema
    finally:
        await notify_app._stop(rt)  # type: ignore[arg-type]
    with pytest.raises(asyncpg.InterfaceError):
        async with own.acquire():
            pass
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()
