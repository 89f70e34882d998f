"""Micro-benchmarks behind the profile's proposals: the same operation two ways, CPU per operation
of the client (this process) and of the PostgreSQL backends, on the local PostgreSQL.

    python -m bench.micro [--n 2000]

* pool: ``pool.fetchval`` with asyncpg's default reset on release (``SELECT
  pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) and without it.
* inbox: applying a batch of 50 events the way ``shared/kafka/consumer.py`` does (a savepoint
  and an inbox INSERT per event), without the savepoints, and with one inbox INSERT per batch.
* http: a JSON POST to a local uvicorn app (h11, and httptools when installed), 16 at a time,
  from httpx (pool of 32 and of 4 connections), the benchmark's raw keep-alive client, and aiohttp
  when installed: CPU per request of the client and of the server.
* registration: intake's ``registration.register`` (the whole use case: its statements, its
  transaction) for fresh applicants, one at a time, on a pool like the service's: CPU per
  registration of the client and of PostgreSQL.
* kafka: a consumer of 8 topics fed 50 messages/s with aiokafka's default fetch settings, with
  batched fetches, and with fewer partitions: its CPU and the broker's per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bench.observe import cpu_seconds
from tests.support.infra import create_database, drop_database, dsn_for


async def _measure(name: str, n: int, op: Callable[[int], Awaitable[Any]], pids: list[int],
                   per: int = 1, server: str = "postgres") -> dict[str, Any]:
    for i in range(min(50, n)):  # warm: statement caches, connections
        await op(i)
    c0, p0, t0 = time.process_time(), cpu_seconds(pids), time.perf_counter()
    for i in range(n):
        await op(i)
    c1, p1, t1 = time.process_time(), cpu_seconds(pids), time.perf_counter()
    ops = n * per
    out = {"case": name, "ops": ops, "client_us_per_op": round((c1 - c0) * 1e6 / ops, 1),
           f"{server}_us_per_op": round((p1 - p0) * 1e6 / ops, 1),
           "wall_us_per_op": round((t1 - t0) * 1e6 / ops, 1)}
    print(f"  {name:<62} client {out['client_us_per_op']:>7} us  {server} "
          f"{out[f'{server}_us_per_op']:>7} us  wall {out['wall_us_per_op']:>7} us  per op", flush=True)
    return out


async def _backends(pool: asyncpg.Pool) -> list[int]:
    return [r["pid"] for r in await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'ketanmu-micro'")]


async def pool_reset(dsn: str, n: int) -> list[dict[str, Any]]:
    async def no_reset(_: asyncpg.Connection) -> None:
        return None

    out = []
    settings = {"application_name": "ketanmu-micro", "search_path": "public"}
    for name, kwargs in (("pool.fetchval, default reset on release", {}),
                         ("pool.fetchval, reset=no-op", {"reset": no_reset})):
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, server_settings=settings,
                                         **kwargs)
        pids = await _backends(pool)
        out.append(await _measure(name, n, lambda i, p=pool: p.fetchval("SELECT $1::int", i), pids))
        await pool.close()
    return out


async def inbox(dsn: str, n: int, batch: int = 50) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "ketanmu-micro"})
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS micro_inbox (consumer text, event_id uuid,"
        " PRIMARY KEY (consumer, event_id));"
        "CREATE TABLE IF NOT EXISTS micro_rows (id uuid PRIMARY KEY, payload jsonb)")
    pids = [await conn.fetchval("SELECT pg_backend_pid()")]
    payload = json.dumps({"pad": "x" * 300})
    insert_inbox = ("INSERT INTO micro_inbox (consumer, event_id) VALUES ('c', $1)"
                    " ON CONFLICT DO NOTHING RETURNING true")
    insert_row = "INSERT INTO micro_rows (id, payload) VALUES ($1, $2::jsonb)"

    async def with_savepoints(_: int) -> None:
        async with conn.transaction():
            for _ in range(batch):
                event = uuid.uuid4()
                async with conn.transaction():
                    if await conn.fetchval(insert_inbox, event):
                        await conn.execute(insert_row, event, payload)

    async def without_savepoints(_: int) -> None:
        async with conn.transaction():
            for _ in range(batch):
                event = uuid.uuid4()
                if await conn.fetchval(insert_inbox, event):
                    await conn.execute(insert_row, event, payload)

    async def inbox_per_batch(_: int) -> None:
        events = [uuid.uuid4() for _ in range(batch)]
        async with conn.transaction():
            fresh = await conn.fetch(
                "INSERT INTO micro_inbox (consumer, event_id) SELECT 'c', unnest($1::uuid[])"
                " ON CONFLICT DO NOTHING RETURNING event_id", events)
            for row in fresh:
                await conn.execute(insert_row, row["event_id"], payload)

    rounds = max(1, n // batch)
    out = [
        await _measure(f"event in a batch of {batch}: savepoint + inbox + row", rounds,
                       with_savepoints, pids, per=batch),
        await _measure(f"event in a batch of {batch}: inbox + row (no savepoint)", rounds,
                       without_savepoints, pids, per=batch),
        await _measure(f"event in a batch of {batch}: one inbox INSERT per batch + row", rounds,
                       inbox_per_batch, pids, per=batch),
    ]
    await conn.close()
    return out


def _serve(port: int, implementation: str) -> None:
    import uvicorn
    from fastapi import FastAPI, Request

    app = FastAPI()

    @app.post("/messages")
    async def messages(request: Request) -> dict[str, Any]:
        await request.body()
        return {"messages": [{"id": "wamid.x"}]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                loop="uvloop", http=implementation)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class _PostJson:
    """``client.post(url, json=...)`` as the services send: ``shared.http_client.post_json``."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def post(self, url: str, json: Any) -> Any:
        from shared.http_client import post_json

        return await post_json(self.client, url, json)

    async def aclose(self) -> None:
        await self.client.aclose()


async def http(n: int, concurrency: int = 16) -> list[dict[str, Any]]:
    """Client CPU per request (this process) and server CPU per request (the uvicorn process)."""
    import multiprocessing

    import httpx

    from bench.rawhttp import RawHttp
    from shared.http_client import outbound_client

    body = {"messaging_product": "whatsapp", "to": "6281234567890", "type": "template",
            "template": {"name": "ketanmu_dicetak", "language": {"code": "id"}}}
    out = []
    servers = ["h11"] + (["httptools"] if _importable("httptools") else [])
    for implementation in servers:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # the server runs in another process: its CPU is measured apart from the client's
        server = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(port, implementation), daemon=True)
        server.start()
        url = f"http://127.0.0.1:{port}/messages"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        clients: list[tuple[str, Any]] = [
            ("httpx, pool of 32", httpx.AsyncClient(limits=httpx.Limits(max_connections=32))),
            ("httpx, pool of 4", httpx.AsyncClient(
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))),
            ("raw keep-alive client (bench/rawhttp.py)", RawHttp(max_connections_per_host=16)),
            ("the services' client: post_json on shared.http_wire, pool of 16", _PostJson(
                outbound_client(max_connections=16))),
        ]
        if _importable("aiohttp"):
            import aiohttp

            clients.append(("aiohttp, pool of 16", aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=16))))
        if _importable("httpx_aiohttp"):
            from httpx_aiohttp import AiohttpTransport

            clients.append(("httpx on aiohttp (httpx_aiohttp), pool of 16", httpx.AsyncClient(
                transport=AiohttpTransport(limits=httpx.Limits(max_connections=16)))))
        try:
            for name, client in clients:
                slots = asyncio.Semaphore(concurrency)

                async def one(client: Any = client, slots: asyncio.Semaphore = slots,
                              url: str = url) -> None:
                    async with slots:
                        response = await client.post(url, json=body)
                        decoded = response.json()
                        if inspect.isawaitable(decoded):  # aiohttp
                            await decoded

                async def burst(_: int, one: Any = one) -> None:
                    await asyncio.gather(*(one() for _ in range(concurrency)))

                out.append(await _measure(
                    f"POST {concurrency} at a time, {name}; uvicorn {implementation}",
                    max(1, n // concurrency), burst, [server.pid], per=concurrency, server="server"))
                close = getattr(client, "aclose", None) or client.close
                await close()
        finally:
            server.terminate()
    return out


async def kafka_fetch(bootstrap: str, seconds: float, rate: float = 50.0) -> list[dict[str, Any]]:
    """A consumer of 8 topics (as intake and notify are) fed ``rate`` messages/s: its CPU and the
    broker's per message, with aiokafka's default fetch settings and with batched fetches."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    from bench.stack import kafka_pid
    from shared.kafka.admin import create_topics

    broker = kafka_pid(bootstrap)
    out = []
    cases = [("6 partitions, fetch_min_bytes=1 fetch_max_wait_ms=500 (default)", 6, {}),
             ("6 partitions, fetch_min_bytes=64KiB fetch_max_wait_ms=50", 6,
              {"fetch_min_bytes": 65536, "fetch_max_wait_ms": 50}),
             ("2 partitions, fetch_min_bytes=1 fetch_max_wait_ms=500 (default)", 2, {})]
    for name, partitions, fetch in cases:
        prefix = f"micro-{uuid.uuid4().hex[:6]}."
        names = tuple(f"t{i}" for i in range(8))
        await create_topics(bootstrap, partitions, topics=names, prefix=prefix)
        consumer = AIOKafkaConsumer(*(prefix + t for t in names), bootstrap_servers=bootstrap,
                                    group_id=prefix + "g", enable_auto_commit=False,
                                    auto_offset_reset="earliest", **fetch)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
        await consumer.start()
        await producer.start()
        received = 0

        async def consume(consumer: AIOKafkaConsumer = consumer) -> None:
            nonlocal received
            while True:
                batch = await consumer.getmany(timeout_ms=50, max_records=500)
                received += sum(len(v) for v in batch.values())
                if batch:
                    await consumer.commit()

        task = asyncio.create_task(consume())
        await asyncio.sleep(3)  # joined
        c0, k0, n0 = time.process_time(), cpu_seconds([broker] if broker else []), received
        sent, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            await producer.send(prefix + names[sent % 5], b"x" * 700, key=uuid.uuid4().bytes)
            sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        await asyncio.sleep(1.0)
        c1, k1, n1 = time.process_time(), cpu_seconds([broker] if broker else []), received
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([prefix + t for t in names])
        finally:
            await admin.close()
        messages = max(n1 - n0, 1)
        result = {"case": name, "messages": messages,
                  "client_us_per_message": round((c1 - c0) * 1e6 / messages, 1),
                  "kafka_us_per_message": round((k1 - k0) * 1e6 / messages, 1)}
        print(f"  {name:<66} client+producer {result['client_us_per_message']:>7} us  kafka "
              f"{result['kafka_us_per_message']:>7} us  per message", flush=True)
        out.append(result)
    return out


async def registration(dsn: str, n: int) -> list[dict[str, Any]]:
    import random
    from pathlib import Path

    import services.intake
    from deploy.local.demo import sample_request
    from services.intake import registration as intake_registration
    from services.intake.inputs import RegistrationIn
    from services.intake.settings import IntakeSettings
    from shared.db.pool import create_pool, migrate

    schema = "intake"
    await migrate(dsn, schema, Path(services.intake.__file__).parent / "migrations")
    # quota high enough for every registration of the run (the default is an office's day)
    settings = IntakeSettings(daily_quota_default=10 * n + 1000)
    caller = intake_registration.Caller(channel="web", intake_via="web", causation_id="micro")
    rng = random.Random(7)
    bodies = [RegistrationIn.model_validate(sample_request(rng)) for _ in range(n + 50)]
    pool = await create_pool(dsn, schema, min_size=1, max_size=1)
    pids = [await pool.fetchval("SELECT pg_backend_pid()")]
    fresh = iter(range(len(bodies)))  # warm-up and run: every applicant registers once

    async def register(_: int) -> None:
        i = next(fresh)
        async with pool.acquire() as conn:
            done = await intake_registration.register(conn, settings=settings, schema=schema,
                                                      body=bodies[i], caller=caller,
                                                      idempotency_key=f"micro-{i}")
        assert not done.replayed

    out = [await _measure("a registration (fresh applicant, Idempotency-Key)", n, register, pids)]
    await pool.close()
    return out


async def main_async(n: int, only: str | None, bootstrap: str) -> None:
    if only in (None, "postgres"):
        database = await create_database("ketanmu_micro")
        dsn = dsn_for(database)
        try:
            print("asyncpg pool acquire/release")
            await pool_reset(dsn, n)
            print("consumer: applying events")
            await inbox(dsn, n)
        finally:
            await drop_database(database)
    if only in (None, "postgres", "registration"):
        database = await create_database("ketanmu_micro")
        dsn = dsn_for(database)
        try:
            print("intake: registering")
            await registration(dsn, n)
        finally:
            await drop_database(database)
    if only in (None, "http"):
        print("HTTP client")
        await http(n)
    if only in (None, "kafka"):
        print("Kafka consumer of 8 topics at 50 messages/s")
        await kafka_fetch(bootstrap, seconds=max(5.0, n / 100))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro")
    parser.add_argument("--n", type=int, default=2000, help="operations per case")
    parser.add_argument("--only", choices=["postgres", "registration", "http", "kafka"])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS",
                                                              "127.0.0.1:9092"))
    args = parser.parse_args(argv)
    import logging

    import uvloop

    logging.basicConfig(level=logging.ERROR)  # aiokafka's metadata retries on fresh topics
    uvloop.run(main_async(args.n, args.only, args.bootstrap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
