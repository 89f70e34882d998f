"""What Kafka and PostgreSQL allow on this machine, measured in the same run.

* Raw Kafka chain: five hop processes, each consuming a topic and producing every record to the
  next (aiokafka, the producer and consumer settings Ketanmu uses: ``acks=all``, idempotent,
  ``linger_ms=2``, batches of up to 500, offsets committed after the batch's sends are
  acknowledged), no database. A driver feeds the first topic with messages of Ketanmu's mean event
  size and reads the last: latency at a fixed rate, then throughput flat out.
* PostgreSQL: single-row INSERTs, each its own committed transaction (BEGIN/INSERT/COMMIT, as the
  services do), from asyncpg, at concurrency 1 and N.

``python -m bench.baselines hop --bootstrap B --src T --dst T --group G`` is one hop process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.observe import cancel, cpu_seconds, each_record, read_from_start
from bench.stats import summary_ms
from deploy.local.system import ROOT
from shared.kafka.admin import create_topics

HOPS = 5


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                            linger_ms=2, request_timeout_ms=15000)


async def run_hop(bootstrap: str, src: str, dst: str, group: str) -> None:
    consumer = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                session_timeout_ms=10_000, heartbeat_interval_ms=1_000)
    producer = _producer(bootstrap)
    await producer.start()
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50, max_records=500)
            if not batch:
                continue
            futures = [await producer.send(dst, r.value, key=r.key, headers=list(r.headers))
                       for records in batch.values() for r in records]
            await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def _spawn_hops(bootstrap: str, prefix: str, names: tuple[str, ...],
                log_dir: Path) -> list[subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(HOPS):
        with open(log_dir / f"raw-hop{i}.log", "ab") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.baselines", "hop", "--bootstrap", bootstrap,
                 "--src", prefix + names[i], "--dst", prefix + names[i + 1],
                 "--group", f"{prefix}raw-hop{i}"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            ))
    return procs


class _Sink:
    """Reads the last topic of the chain; latency = its record's timestamp - the first send."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.arrived: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = await read_from_start(self.bootstrap, [self.topic], fetch_max_wait_ms=50)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        await each_record(self._consumer, self._on_record, timeout_ms=100)

    def _on_record(self, record: Any) -> None:
        key = record.key.decode()
        self.arrived[key] = time.time()
        self.latency[key] = record.timestamp / 1000 - float(dict(record.headers)["t0"])

    async def wait_for(self, keys: list[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(k in self.arrived for k in keys):
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        await cancel(self._task)
        if self._consumer:
            await asyncio.sleep(0.05)
            await self._consumer.stop()


async def raw_kafka_chain(*, bootstrap: str, prefix: str, partitions: int, size: int, rate: float,
                          seconds: float, burst: int, log_dir: Path, kafka: int | None) -> dict[str, Any]:
    names = tuple(f"raw.hop{i}" for i in range(HOPS + 1))
    await create_topics(bootstrap, partitions, topics=names, prefix=prefix)
    procs = _spawn_hops(bootstrap, prefix, names, log_dir)
    sink = _Sink(bootstrap, prefix + names[-1])
    producer = _producer(bootstrap)
    value = json.dumps({"pad": "x" * max(0, size - 11)}).encode()
    result: dict[str, Any] = {"hops": HOPS, "message_bytes": len(value), "partitions": partitions}
    try:
        await producer.start()

        async def send(key: str) -> Any:
            return await producer.send(prefix + names[0], value, key=key.encode(),
                                       headers=[("t0", repr(time.time()).encode())])

        # warm-up: every hop joined its group and the chain answers end to end
        warm = [f"warm-{i}" for i in range(20)]
        await asyncio.gather(*[await send(k) for k in warm])
        await sink.start()  # after the first sends: the fresh topics have leaders by now
        if not await sink.wait_for(warm, 90):
            raise RuntimeError("the raw chain did not answer within 90 s (see raw-hop*.log)")

        # latency at a fixed rate
        paced = [f"paced-{i}" for i in range(max(1, int(rate * seconds)))]
        start = time.monotonic()
        acks = []
        for i, key in enumerate(paced):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            acks.append(await send(key))
        await asyncio.gather(*acks)
        await sink.wait_for(paced, 60)
        result["latency_at_rate"] = {"rate": rate, **summary_ms(
            sink.latency[k] for k in paced if k in sink.latency)}

        # throughput flat out
        pids = [p.pid for p in procs] + ([kafka] if kafka else [])
        cpu0, hop_cpu0 = cpu_seconds(pids), cpu_seconds([p.pid for p in procs])
        flat = [f"flat-{i}" for i in range(burst)]
        start_t = time.time()
        acks = [await send(k) for k in flat]
        await asyncio.gather(*acks)
        done = await sink.wait_for(flat, 120)
        end_t = max((sink.arrived[k] for k in flat if k in sink.arrived), default=time.time())
        cpu, hop_cpu = cpu_seconds(pids) - cpu0, cpu_seconds([p.pid for p in procs]) - hop_cpu0
        arrived = sum(k in sink.arrived for k in flat)
        result["throughput"] = {
            "messages": burst,
            "arrived": arrived,
            "complete": done,
            "seconds": round(end_t - start_t, 3),
            "chains_per_s": round(arrived / max(end_t - start_t, 1e-9), 1),
            "cpu_ms_per_chain": round(cpu * 1000 / max(arrived, 1), 3),
            "hop_processes_cpu_ms_per_chain": round(hop_cpu * 1000 / max(arrived, 1), 3),
            "latency": summary_ms(sink.latency[k] for k in flat if k in sink.latency),
        }
    finally:
        await sink.stop()
        with contextlib.suppress(Exception):
            await producer.stop()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return result


async def postgres_transactions(*, dsn: str, seconds: float, concurrency: int,
                                size: int) -> dict[str, Any]:
    """Committed single-row transactions per second, and their CPU cost (client + backends)."""
    settings = {"application_name": "ketanmu-bench-baseline"}
    setup = await asyncpg.connect(dsn, server_settings=settings)
    await setup.execute(
        "CREATE TABLE IF NOT EXISTS bench_raw_tx (id bigserial PRIMARY KEY, request_id uuid NOT NULL,"
        " payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    )
    await setup.close()
    payload = json.dumps({"pad": "x" * max(0, size - 11)})
    conns = [await asyncpg.connect(dsn, server_settings=settings) for _ in range(concurrency)]
    backends = [await c.fetchval("SELECT pg_backend_pid()") for c in conns]
    counts = [0] * concurrency

    async def worker(i: int, conn: asyncpg.Connection, deadline: float) -> None:
        while time.monotonic() < deadline:
            async with conn.transaction():
                await conn.execute("INSERT INTO bench_raw_tx (request_id, payload) VALUES ($1, $2)",
                                   uuid.uuid4(), payload)
            counts[i] += 1

    try:
        client0, pg0, t0 = time.process_time(), cpu_seconds(backends), time.monotonic()
        deadline = t0 + seconds
        await asyncio.gather(*(worker(i, c, deadline) for i, c in enumerate(conns)))
        elapsed = time.monotonic() - t0
        client, pg = time.process_time() - client0, cpu_seconds(backends) - pg0
    finally:
        for conn in conns:
            await conn.close()
    total = sum(counts)
    return {
        "concurrency": concurrency,
        "transactions": total,
        "seconds": round(elapsed, 2),
        "tx_per_s": round(total / elapsed, 1),
        "client_cpu_ms_per_tx": round(client * 1000 / max(total, 1), 3),
        "postgres_cpu_ms_per_tx": round(pg * 1000 / max(total, 1), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    parser.add_argument("command", choices=["hop"])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(run_hop(args.bootstrap, args.src, args.dst, args.group))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
