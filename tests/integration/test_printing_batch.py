"""Printing against a real PostgreSQL: a consumed batch queues the same jobs as one event at a time,
a bad event is dead-lettered alone, and the operator actions keep their answers and audit trail
with fewer round trips."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import ConsumerRecord
from fastapi import FastAPI

from services.printing import api, events
from services.printing.settings import PrintingSettings
from shared.contracts import topics
from shared.contracts.events import (
    Address,
    Applicant,
    Delivery,
    DocumentType,
    Envelope,
    RequestRegistered,
    new_event,
)
from shared.db.pool import create_pool, migrate
from shared.http import install_error_handlers, serve_directly
from shared.kafka.consumer import EventConsumer

pytestmark = pytest.mark.integration

MIGRATIONS = Path(events.__file__).parent / "migrations"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
JOB_COLUMNS = (
    "request_id, tracking_code, document_type, applicant_name, applicant_nik, correlation_id,"
    " status, registered_at"
)


async def printing_schema(database: str) -> tuple[str, asyncpg.Pool]:
    schema = f"p_{uuid.uuid4().hex[:8]}"
    await migrate(database, schema, MIGRATIONS)
    return schema, await create_pool(database, schema)


@pytest.fixture
async def printing_db(database: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    schema, pool = await printing_schema(database)
    yield schema, pool
    await pool.close()


def registered(
    request_id: uuid.UUID, code: str, *, name: str = "Budi Santoso", minutes: int = 0
) -> Envelope[Any]:
    return new_event(
        topics.REQUEST_REGISTERED,
        request_id=request_id,
        correlation_id=str(request_id),
        causation_id="test",
        producer="intake",
        occurred_at=T0 + timedelta(minutes=minutes),
        data=RequestRegistered(
            tracking_code=code,
            document_type=DocumentType.KK,
            channel="web",
            applicant=Applicant(name=name, nik="3516010101900001", phone="+6285712345678"),
            delivery=Delivery(
                partner="pos",
                recipient_name=name,
                recipient_phone="+6285712345678",
                address=Address(
                    street="Jl. Pahlawan 5", rt_rw="001/002", kelurahan="Sooko",
                    kecamatan="Sooko", kabupaten_kota="Kab. Mojokerto", provinsi="Jawa Timur",
                    postal_code="61361",
                ),
            ),
            cod_fee=20_000,
            requirement_documents=["KTP"],
        ),
    )


def record(offset: int, event: Envelope[Any]) -> ConsumerRecord:
    value = event.model_dump_json().encode()
    return ConsumerRecord(topic=topics.REQUEST_REGISTERED, partition=0, offset=offset, timestamp=0,
                          timestamp_type=0, key=str(event.request_id).encode(), value=value,
                          checksum=None, serialized_key_size=36, serialized_value_size=len(value),
                          headers=[])


def consumer(pool: asyncpg.Pool) -> EventConsumer:
    return EventConsumer(service="printing", group_id="printing", pool_provider=lambda: pool,
                         handlers=events.handlers(), batch_handler=events.apply_batch)


async def jobs(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(f"SELECT {JOB_COLUMNS} FROM print_jobs ORDER BY request_id")
    return [dict(r) for r in rows]


async def test_a_batch_queues_the_same_jobs_as_one_event_at_a_time(
    database: str, printing_db: tuple[str, asyncpg.Pool]
) -> None:
    """Several requests, one of them registered twice (two events: the first one wins), an event
    delivered twice, in mixed order: one batch and one-by-one end in the same state."""
    _, batch_pool = printing_db
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first_c = registered(c, "C-FIRST", name="Citra", minutes=3)
    batch = [
        registered(b, "B-1", minutes=2),
        first_c,
        registered(a, "A-1", minutes=1),
        registered(c, "C-SECOND", name="Someone Else", minutes=4),
        first_c,  # the same event again: a duplicate
    ]
    records = [record(n, e) for n, e in enumerate(batch)]
    fast = consumer(batch_pool)
    await fast.consume_batch(records)
    assert (fast.stats.applied, fast.stats.duplicates, fast.stats.dead_lettered) == (4, 1, 0)

    _, single_pool = await printing_schema(database)
    try:
        slow = consumer(single_pool)
        for r in records:
            await slow.consume_batch([r])
        expected = await jobs(single_pool)
    finally:
        await single_pool.close()

    got = await jobs(batch_pool)
    assert got == expected
    assert len(got) == 3
    by_id = {j["request_id"]: j for j in got}
    assert by_id[c]["tracking_code"] == "C-FIRST" and by_id[c]["applicant_name"] == "Citra"
    assert by_id[a]["registered_at"] == T0 + timedelta(minutes=1)
    assert {j["status"] for j in got} == {"queued"}
    assert by_id[b]["correlation_id"] == str(b) and by_id[b]["document_type"] == "kk"

    # a redelivered batch changes nothing (every event is a duplicate)
    await fast.consume_batch(records)
    assert fast.stats.duplicates == 1 + len(records)
    assert await jobs(batch_pool) == got


async def test_one_bad_event_in_a_batch_is_dead_lettered_alone(
    printing_db: tuple[str, asyncpg.Pool],
) -> None:
    """PostgreSQL refuses a NUL character in text: the batch's INSERT fails, the batch is applied
    again one event at a time and only that event goes to the dead letters."""
    _, pool = printing_db
    good_1, bad, good_2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    batch = [registered(good_1, "G-1"), registered(bad, "BAD\x00CODE"), registered(good_2, "G-2")]
    c = consumer(pool)
    await c.consume_batch([record(n, e) for n, e in enumerate(batch)])
    assert (c.stats.applied, c.stats.dead_lettered) == (2, 1)
    assert {j["request_id"] for j in await jobs(pool)} == {good_1, good_2}
    (dead,) = await pool.fetch('SELECT "offset", reason FROM dead_letter')
    assert dead["offset"] == 1
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1",
                               batch[1].event_id) == 0


# --- the operator actions ---------------------------------------------------------------------


class StatementLog:
    """Every statement the pool's connections send (BEGIN and COMMIT included)."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def init(self, conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda q: self.queries.append(q.query))

    def take(self) -> list[str]:
        """The statements since the last take, without asyncpg's own type introspection (once
        per connection for each array type it has not seen yet, e.g. the outbox's uuid[])."""
        taken, self.queries = self.queries, []
        return [q for q in taken if "typeinfo_tree" not in q and "set_config('jit'" not in q
                and "current_setting('jit')" not in q]


async def _no_reset(_: asyncpg.Connection) -> None:
    pass


@pytest.fixture
async def printing_api(
    database: str,
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog]]:
    schema = f"p_{uuid.uuid4().hex[:8]}"
    await migrate(database, schema, MIGRATIONS)
    statements = StatementLog()
    # as shared.db.pool.create_pool builds it (no reset query on release), plus the statement log
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4, init=statements.init,
                                     server_settings={"search_path": schema}, reset=_no_reset)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api.router)
    serve_directly(app, [api.mark_printed, api.claim_next])  # as the service serves them
    app.state.rt = SimpleNamespace(pool=pool, schema=schema, settings=PrintingSettings(),
                                   extras={})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://printing.test") as http:
        yield http, pool, statements
    await pool.close()


async def queued(pool: asyncpg.Pool, *codes: str) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in codes]
    async with pool.acquire() as conn:
        await events.apply_batch(conn, [registered(i, c) for i, c in zip(ids, codes, strict=True)])
    return ids


async def history(pool: asyncpg.Pool, request_id: uuid.UUID) -> list[tuple[str, str, str]]:
    rows = await pool.fetch("SELECT action, operator, outcome FROM print_job_actions"
                            " WHERE request_id = $1 ORDER BY id", request_id)
    return [(r["action"], r["operator"], r["outcome"]) for r in rows]


async def test_claim_and_print_answer_and_record_as_before_in_fewer_round_trips(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
) -> None:
    http, pool, statements = printing_api
    (job,) = await queued(pool, "T-1")
    statements.take()

    claim = await http.post(f"/print-jobs/{job}/claim", json={"operator": "ani"})
    assert claim.status_code == 200 and claim.json()["claimed_by"] == "ani"
    # the read, the compare-and-set UPDATE with its action row (was BEGIN, SELECT FOR UPDATE, the
    # UPDATE, COMMIT)
    assert len(statements.take()) == 2

    taken = await http.post(f"/print-jobs/{job}/claim", json={"operator": "budi"})
    assert taken.status_code == 409 and "ani" in taken.json()["detail"]

    statements.take()
    printed = await http.post(f"/print-jobs/{job}/printed",
                              json={"operator": "ani", "document_number": "3516-0001"})
    assert printed.status_code == 200
    body = printed.json()
    assert body["status"] == "printed" and body["document_number"] == "3516-0001"
    assert body["operator"] == "ani" and body["claimed_by"] == "ani"
    # the read, UPDATE + action row + outbox row
    assert len(statements.take()) == 2
    (event,) = await pool.fetch("SELECT topic, key FROM outbox")
    assert (event["topic"], event["key"]) == (topics.DOCUMENT_PRINTED, str(job))

    again = await http.post(f"/print-jobs/{job}/printed",
                            json={"operator": "ani", "document_number": "3516-0001"})
    assert again.status_code == 200 and again.json() == body  # the same mark: a no-op
    other = await http.post(f"/print-jobs/{job}/printed",
                            json={"operator": "ani", "document_number": "3516-0002"})
    assert other.status_code == 409 and other.json()["title"].startswith("Sudah dicetak")
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1

    assert await history(pool, job) == [
        ("claim", "ani", "done"), ("claim", "budi", "refused"), ("print", "ani", "done"),
        ("print", "ani", "no_op"), ("print", "ani", "refused"),
    ]
    assert (await http.get(f"/print-jobs/{job}")).json()["history"][-1]["detail"].startswith(
        "Nomor dokumen 3516-0001")


async def test_a_job_changed_between_read_and_write_is_read_and_decided_again(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Budi's claim lands between Ani's read and Ani's write: Ani's write changes nothing, her
    action is read and decided again, and she is told who has the job."""
    http, pool, _ = printing_api
    (job,) = await queued(pool, "R-1")
    real_update = api._update
    writes = []

    async def budi_first(conn: asyncpg.Connection, read: asyncpg.Record, *args: Any,
                         **kw: Any) -> asyncpg.Record:
        writes.append(args[0])
        if len(writes) == 1:
            await pool.execute("UPDATE print_jobs SET status = 'claimed', claimed_by = 'budi',"
                               " claimed_at = now() WHERE request_id = $1", job)
        return await real_update(conn, read, *args, **kw)

    monkeypatch.setattr(api, "_update", budi_first)
    answer = await http.post(f"/print-jobs/{job}/printed",
                             json={"operator": "ani", "document_number": "3516-R1"})
    assert answer.status_code == 409 and "budi" in answer.json()["detail"]
    assert writes == ["print"]  # the second decision was a refusal: nothing to write
    row = await pool.fetchrow("SELECT status, claimed_by, document_number FROM print_jobs"
                              " WHERE request_id = $1", job)
    assert tuple(row) == ("claimed", "budi", None)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await history(pool, job) == [("print", "ani", "refused")]


async def test_a_used_document_number_is_refused_recorded_and_changes_nothing(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
) -> None:
    http, pool, _ = printing_api
    first, second = await queued(pool, "U-1", "U-2")
    ok = await http.post(f"/print-jobs/{first}/printed",
                         json={"operator": "ani", "document_number": "3516-DUP"})
    assert ok.status_code == 200
    reused = await http.post(f"/print-jobs/{second}/printed",
                             json={"operator": "budi", "document_number": "3516-DUP"})
    assert reused.status_code == 409
    assert reused.json()["title"] == "Nomor dokumen sudah dipakai / Document number already used"
    job = (await http.get(f"/print-jobs/{second}")).json()
    assert job["status"] == "queued" and job["document_number"] is None and job["operator"] is None
    assert [(a["action"], a["outcome"], a["detail"]) for a in job["history"]] == [
        ("print", "refused", "Setiap dokumen punya nomor unik / every document number is unique")]
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1  # the first print's only
    # the job is still free: printed with another number it is
    again = await http.post(f"/print-jobs/{second}/printed",
                            json={"operator": "budi", "document_number": "3516-OTHER"})
    assert again.status_code == 200 and again.json()["claimed_by"] == "budi"


async def test_release_reject_and_unknown_jobs(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
) -> None:
    http, pool, _ = printing_api
    (job,) = await queued(pool, "R-1")
    unknown = uuid.uuid4()
    missing = await http.post(f"/print-jobs/{unknown}/claim", json={"operator": "ani"})
    assert missing.status_code == 404
    assert await history(pool, unknown) == []  # nothing recorded for a job that does not exist

    noop = await http.post(f"/print-jobs/{job}/release", json={"operator": "ani"})
    assert noop.status_code == 200 and noop.json()["status"] == "queued"
    await http.post(f"/print-jobs/{job}/claim", json={"operator": "ani"})
    assert (await http.post(f"/print-jobs/{job}/release", json={"operator": "budi"})).status_code \
        == 409
    released = await http.post(f"/print-jobs/{job}/release", json={"operator": "ani"})
    assert released.json()["status"] == "queued" and released.json()["claimed_by"] is None
    rejected = await http.post(f"/print-jobs/{job}/reject", json={
        "operator": "budi", "reason_code": "data_mismatch", "reason": "NIK tidak cocok"})
    assert rejected.status_code == 200
    assert rejected.json()["reject_code"] == "data_mismatch"
    assert rejected.json()["reject_reason"] == "NIK tidak cocok"
    assert (await http.post(f"/print-jobs/{job}/reject", json={
        "operator": "budi", "reason": "NIK tidak cocok"})).status_code == 200  # no-op
    late = await http.post(f"/print-jobs/{job}/printed",
                           json={"operator": "ani", "document_number": "3516-LATE"})
    assert late.status_code == 409 and "rejected" in late.json()["detail"]
    assert [t for (t,) in await pool.fetch("SELECT topic FROM outbox")] == [topics.REQUEST_REJECTED]
    assert await history(pool, job) == [
        ("release", "ani", "no_op"), ("claim", "ani", "done"), ("release", "budi", "refused"),
        ("release", "ani", "done"), ("reject", "budi", "done"), ("reject", "budi", "no_op"),
        ("print", "ani", "refused"),
    ]


async def queued_in_order(pool: asyncpg.Pool, count: int) -> list[uuid.UUID]:
    """``count`` queued jobs registered a minute apart, oldest first."""
    ids = [uuid.uuid4() for _ in range(count)]
    async with pool.acquire() as conn:
        await events.apply_batch(
            conn, [registered(i, f"N-{n}", minutes=n) for n, i in enumerate(ids)])
    return ids


async def test_claim_next_takes_the_oldest_free_jobs_in_one_statement(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
) -> None:
    """Free is queued or claimed with a lease run out; a live claim keeps its job."""
    http, pool, statements = printing_api
    oldest, held, expired, fourth, fifth = await queued_in_order(pool, 5)
    assert (await http.post(f"/print-jobs/{held}/claim", json={"operator": "ani"})).status_code \
        == 200
    await pool.execute("UPDATE print_jobs SET status = 'claimed', claimed_by = 'budi',"
                       " claimed_at = now() - interval '31 minutes' WHERE request_id = $1",
                       expired)
    statements.take()

    first = await http.post("/print-jobs/claim-next", json={"operator": "cici", "limit": 3})
    assert first.status_code == 200
    assert len(statements.take()) == 1
    jobs = first.json()["jobs"]
    assert [j["request_id"] for j in jobs] == [str(oldest), str(expired), str(fourth)]
    assert {(j["status"], j["claimed_by"], j["claim_expired"]) for j in jobs} == {
        ("claimed", "cici", False)}
    assert jobs[0]["applicant_nik"] == "3516********0001"  # masked, as in the list

    rest = await http.post("/print-jobs/claim-next", json={"operator": "dedi"})  # limit 10
    assert [j["request_id"] for j in rest.json()["jobs"]] == [str(fifth)]
    empty = await http.post("/print-jobs/claim-next", json={"operator": "dedi"})
    assert empty.status_code == 200 and empty.json() == {"jobs": []}

    owners = dict(await pool.fetch("SELECT request_id, claimed_by FROM print_jobs"))
    assert owners == {oldest: "cici", held: "ani", expired: "cici", fourth: "cici",
                      fifth: "dedi"}
    assert await history(pool, expired) == [("claim", "cici", "done")]
    assert await history(pool, held) == [("claim", "ani", "done")]
    # the claims are ordinary claims: the holder prints, anyone else is refused
    printed = await http.post(f"/print-jobs/{oldest}/printed",
                              json={"operator": "cici", "document_number": "3516-NEXT-1"})
    assert printed.status_code == 200
    taken = await http.post(f"/print-jobs/{fourth}/printed",
                            json={"operator": "dedi", "document_number": "3516-NEXT-4"})
    assert taken.status_code == 409 and "cici" in taken.json()["detail"]


async def test_claim_next_filters_by_document_type_and_refuses_bad_input(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
) -> None:
    http, pool, _ = printing_api
    (kk,) = await queued(pool, "K-1")  # registered() makes KK requests
    none = await http.post("/print-jobs/claim-next",
                           json={"operator": "ani", "document_type": "akta_kelahiran"})
    assert none.json() == {"jobs": []}
    some = await http.post("/print-jobs/claim-next", json={"operator": "ani", "document_type": "kk"})
    assert [j["request_id"] for j in some.json()["jobs"]] == [str(kk)]

    for bad in ({"operator": "ani", "limit": 0}, {"operator": "ani", "limit": 101},
                {"operator": "ani", "document_type": "passport"}, {"limit": 5},
                {"operator": "ani", "limit": 5, "status": "queued"}):
        answer = await http.post("/print-jobs/claim-next", json=bad)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["detail"]
    assert await pool.fetchval("SELECT count(*) FROM print_job_actions") == 1


async def test_operators_asking_for_the_next_jobs_at_once_never_get_the_same_job(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
) -> None:
    http, pool, _ = printing_api
    await queued_in_order(pool, 24)
    operators = [f"operator-{n}" for n in range(8)]
    for _ in range(3):  # a few rounds, so that some calls overlap on the same rows
        answers = await asyncio.gather(*(
            http.post("/print-jobs/claim-next", json={"operator": op, "limit": 2})
            for op in operators))
        assert all(a.status_code == 200 for a in answers)
    claims = await pool.fetch("SELECT request_id, operator FROM print_job_actions")
    assert len(claims) == 24 and len({c["request_id"] for c in claims}) == 24
    owners = dict(await pool.fetch("SELECT request_id, claimed_by FROM print_jobs"))
    assert {c["request_id"]: c["operator"] for c in claims} == owners


async def test_claim_next_skips_a_job_another_statement_is_changing_instead_of_waiting(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
) -> None:
    """A job locked by another operator's action (here a transaction left open on it) is passed
    over, not waited for; once that lets go, the job is free for the next call."""
    http, pool, _ = printing_api
    oldest, second = await queued_in_order(pool, 2)
    async with pool.acquire() as other, other.transaction():
        await other.execute("SELECT 1 FROM print_jobs WHERE request_id = $1 FOR UPDATE", oldest)
        answer = await asyncio.wait_for(
            http.post("/print-jobs/claim-next", json={"operator": "ani"}), 5)
    assert [j["request_id"] for j in answer.json()["jobs"]] == [str(second)]
    later = await http.post("/print-jobs/claim-next", json={"operator": "budi"})
    assert [(j["request_id"], j["claimed_by"]) for j in later.json()["jobs"]] == [
        (str(oldest), "budi")]


async def test_the_first_action_after_a_claim_decides_on_the_claimed_row(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
) -> None:
    """claimed_jobs.py: the jobs a claim took are kept as claimed, and the next action on each
    goes straight to its compare-and-set (1 statement, not 2), with the answer, the row and the
    audit trail of the read path. What a kept row does not lead to a write is decided on a read."""
    http, pool, statements = printing_api
    first, second, third = await queued_in_order(pool, 3)
    stack = await http.post("/print-jobs/claim-next", json={"operator": "ani", "limit": 3})
    assert len(stack.json()["jobs"]) == 3
    statements.take()

    printed = await http.post(f"/print-jobs/{first}/printed",
                              json={"operator": "ani", "document_number": "3516-K-1"})
    assert printed.status_code == 200
    assert len(statements.take()) == 1  # the compare-and-set, with its action and outbox rows
    # the same answer as a read would give
    assert printed.json() == {k: v for k, v in (await http.get(f"/print-jobs/{first}")).json()
                              .items() if k != "history"}
    assert printed.json()["status"] == "printed" and printed.json()["claimed_by"] == "ani"
    statements.take()

    # used once: the same mark again is a no-op decided on a read
    again = await http.post(f"/print-jobs/{first}/printed",
                            json={"operator": "ani", "document_number": "3516-K-1"})
    assert again.status_code == 200 and again.json() == printed.json()
    assert len(statements.take()) == 2  # the read, the no-op's action row

    # a used number: the kept row's statement fails, and the refusal is decided (and recorded,
    # once) after a read
    reused = await http.post(f"/print-jobs/{second}/printed",
                             json={"operator": "ani", "document_number": "3516-K-1"})
    assert reused.status_code == 409 and reused.json()["title"].startswith("Nomor dokumen")
    assert await history(pool, second) == [("claim", "ani", "done"), ("print", "ani", "refused")]

    rejected = await http.post(f"/print-jobs/{third}/reject",
                               json={"operator": "ani", "reason": "KTP asli belum ada",
                                     "reason_code": "missing_requirement"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    topics_out = [r["topic"] for r in await pool.fetch("SELECT topic FROM outbox ORDER BY id")]
    assert topics_out == [topics.DOCUMENT_PRINTED, topics.REQUEST_REJECTED]
    assert await history(pool, first) == [("claim", "ani", "done"), ("print", "ani", "done"),
                                          ("print", "ani", "no_op")]


async def test_a_kept_row_gone_stale_is_read_and_decided_again(
    printing_api: tuple[httpx.AsyncClient, asyncpg.Pool, StatementLog],
) -> None:
    """After the claim, the job changed elsewhere (another instance, an expired lease taken):
    the kept row's compare-and-set writes nothing, and the action is read and decided on what the
    database holds, whichever way that goes."""
    http, pool, statements = printing_api
    taken_over, released = await queued_in_order(pool, 2)
    stack = await http.post("/print-jobs/claim-next", json={"operator": "ani", "limit": 2})
    assert len(stack.json()["jobs"]) == 2
    await pool.execute("UPDATE print_jobs SET claimed_by = 'budi', claimed_at = now()"
                       " WHERE request_id = $1", taken_over)
    await pool.execute("UPDATE print_jobs SET status = 'queued', claimed_by = NULL,"
                       " claimed_at = NULL WHERE request_id = $1", released)
    statements.take()

    refused = await http.post(f"/print-jobs/{taken_over}/printed",
                              json={"operator": "ani", "document_number": "3516-S-1"})
    assert refused.status_code == 409 and "budi" in refused.json()["detail"]
    # the kept row's compare-and-set (nothing written), the read, the refusal's action row
    assert len(statements.take()) == 3
    row = await pool.fetchrow("SELECT status, claimed_by, document_number FROM print_jobs"
                              " WHERE request_id = $1", taken_over)
    assert tuple(row) == ("claimed", "budi", None)

    # the kept row says claimed by ani, so cici would be refused on it: she is not, since the
    # job is free again
    printed = await http.post(f"/print-jobs/{released}/printed",
                              json={"operator": "cici", "document_number": "3516-S-2"})
    assert printed.status_code == 200 and printed.json()["claimed_by"] == "cici"
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
    assert await history(pool, taken_over) == [("claim", "ani", "done"),
                                               ("print", "ani", "refused")]
