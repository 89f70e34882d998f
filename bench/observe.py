"""What the benchmark watches while it drives load.

* ``KafkaTap``: every record of the run's topics, read with a plain aiokafka consumer (no group):
  when each request's events were on Kafka (the record's producer timestamp), value sizes, dead
  letters, document numbers.
* ``LagSampler``: each consumer group's lag, committed offsets against end offsets.
* ``ProcSampler``: CPU seconds and peak RSS of every process: the services, the sandbox, the Kafka
  JVM, PostgreSQL's backends for the run's database and its background processes, the benchmark;
  and once a second the host's speed (``speed_probe_ms``: a fixed loop's CPU time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.stats import percentile
from shared.contracts import topics


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    await asyncio.sleep(0.05)  # aiokafka re-raises CancelledError if stopped before it first ran
    with contextlib.suppress(Exception):
        await consumer.stop()


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background loop and wait until it has stopped."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def read_from_start(bootstrap: str, topic_names: list[str], **settings: Any) -> AIOKafkaConsumer:
    """A consumer (no group) assigned every partition of ``topic_names``, at their beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **settings)
    await consumer.start()
    tps = []
    for name in topic_names:
        parts = consumer.partitions_for_topic(name)
        if parts is None:  # a fresh topic the client has no metadata for yet
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(name) or set()
        tps += [TopicPartition(name, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def each_record(consumer: AIOKafkaConsumer, on_record: Callable[[Any], None],
                      timeout_ms: int = 200) -> None:
    """Hand every record the consumer reads to ``on_record``, until cancelled."""
    while True:
        batch = await consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        for records in batch.values():
            for record in records:
                on_record(record)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds so far of the processes that still exist."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


@dataclass
class TapStats:
    records: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)


class KafkaTap:
    """Reads the run's topics from their beginning; ``seen[request_id][topic]`` = epoch seconds."""

    def __init__(self, bootstrap: str, prefix: str, topic_names: list[str]) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.topic_names = topic_names
        self.seen: dict[str, dict[str, float]] = defaultdict(dict)
        self.repeats: Counter[str] = Counter()  # the same event type twice for one request
        self.dead_letters: list[tuple[float, str]] = []  # (timestamp, dlq-reason)
        self.document_numbers: dict[str, list[str]] = defaultdict(list)
        self.stats = TapStats()
        self.counts: Counter[str] = Counter()  # records per logical topic
        self.listeners: list[Callable[[str, str, float], None]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Latencies come from the records' own timestamps, so the tap may read late and in bulk:
        # one fetch per half second instead of one per record costs the benchmark (and the
        # broker) a fraction of the CPU.
        self._consumer = await read_from_start(
            self.bootstrap, [self.prefix + name for name in self.topic_names],
            fetch_max_wait_ms=500, fetch_min_bytes=1 << 20, max_partition_fetch_bytes=4 << 20)
        self._task = asyncio.create_task(self._run(), name="kafka-tap")

    async def stop(self) -> None:
        await cancel(self._task)
        if self._consumer:
            await _stop_consumer(self._consumer)

    async def _run(self) -> None:
        assert self._consumer is not None
        await each_record(self._consumer, self._on_record)

    def _on_record(self, record: Any) -> None:
        topic = record.topic.removeprefix(self.prefix)
        at = record.timestamp / 1000
        size = len(record.value or b"")
        self.stats.records[topic] += 1
        self.stats.bytes[topic] += size
        if topic.startswith("dlq."):
            reason = dict(record.headers).get("dlq-reason", b"").decode("utf-8", "replace")
            self.dead_letters.append((at, f"{topic}: {reason[:200]}"))
            return
        request_id = (record.key or b"").decode("utf-8", "replace")
        per_request = self.seen[request_id]
        if topic in per_request:
            self.repeats[topic] += 1
        else:
            per_request[topic] = at
        self.counts[topic] += 1
        if topic == topics.DOCUMENT_PRINTED:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                number = orjson.loads(record.value)["data"]["document_number"]
                self.document_numbers[request_id].append(number)
        for listener in self.listeners:
            listener(request_id, topic, at)

    def mean_value_size(self, names: tuple[str, ...] = topics.LIFECYCLE_TOPICS) -> int:
        records = sum(self.stats.records[n] for n in names)
        return int(sum(self.stats.bytes[n] for n in names) / records) if records else 1024


class LagSampler:
    """Per group: sum over its partitions of (end offset - committed offset), sampled."""

    def __init__(self, bootstrap: str, groups: dict[str, str], interval_s: float = 2.0) -> None:
        self.bootstrap = bootstrap
        self.groups = groups  # service -> group id
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._task: asyncio.Task[None] | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._coordinators: dict[str, int] = {}

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="lag-sampler")

    async def stop(self) -> None:
        await cancel(self._task)
        if self._consumer:
            await _stop_consumer(self._consumer)
        if self._admin:
            await self._admin.close()

    async def sample(self) -> dict[str, int]:
        assert self._admin is not None and self._consumer is not None
        committed: dict[str, dict[TopicPartition, int]] = {}
        for service, group in self.groups.items():
            if group not in self._coordinators:
                self._coordinators[group] = await self._admin.find_coordinator(group)
            offsets = await self._admin.list_consumer_group_offsets(
                group, group_coordinator_id=self._coordinators[group])
            committed[service] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        group_topics = {tp.topic for offsets in committed.values() for tp in offsets}
        tps = [TopicPartition(t, p) for t in group_topics
               for p in sorted(self._consumer.partitions_for_topic(t) or ())]
        if any(self._consumer.partitions_for_topic(t) is None for t in group_topics):
            await self._consumer._client.force_metadata_update()
        ends = await self._consumer.end_offsets(tps) if tps else {}
        lag = {}
        for service, offsets in committed.items():
            mine = {tp.topic for tp in offsets}
            lag[service] = sum(end - offsets.get(tp, 0) for tp, end in ends.items() if tp.topic in mine)
        return lag

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.samples.append((time.time(), await self.sample()))
            await asyncio.sleep(self.interval_s)

    def window(self, t0: float, t1: float) -> dict[str, dict[str, float]]:
        inside = [lag for at, lag in self.samples if t0 <= at <= t1]
        out: dict[str, dict[str, float]] = {}
        for service in self.groups:
            values = [lag.get(service, 0) for lag in inside]
            out[service] = {
                "max": max(values, default=0),
                "mean": round(sum(values) / len(values), 1) if values else 0.0,
                "last": values[-1] if values else 0,
            }
        return out

    def latest_total(self) -> int:
        return sum(self.samples[-1][1].values()) if self.samples else 0


@dataclass
class ProcWindow:
    cpu_start: dict[int, float]
    rss_peak: dict[str, int]
    t0: float
    machine_busy0: float = 0.0
    steal0: float = 0.0


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy (not idle, not waiting for I/O, not taken
    by the hypervisor: ``machine_steal_s``)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - machine_steal_s(t))


def machine_steal_s(t: Any = None) -> float:
    """CPU seconds the hypervisor gave to other guests while ours wanted to run (a virtual
    machine's cores are shared with the host's other tenants): 0 on bare metal."""
    t = t or psutil.cpu_times()
    return float(getattr(t, "steal", 0.0))


class ProcSampler:
    """CPU seconds and peak RSS per named group of processes (a name may cover several pids)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.groups: dict[str, list[int]] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._last_cpu: dict[int, float] = {}
        self._windows: list[ProcWindow] = []
        self._task: asyncio.Task[None] | None = None
        self.refresh: Callable[[], Any] | None = None  # async callable returning {name: [pids]}
        self.probes: list[tuple[float, float]] = []  # (time, speed_probe_ms())
        # group -> pid -> label: a group's CPU split by label too (PostgreSQL's backends by the
        # service they work for), as ``by`` in close_window's figures
        self.labels: dict[str, dict[int, str]] = {}

    def track(self, groups: dict[str, list[int]]) -> None:
        self.groups = {name: [p for p in pids if p] for name, pids in groups.items()}
        for pids in self.groups.values():
            for pid in pids:
                if pid not in self._procs:
                    with contextlib.suppress(psutil.Error):
                        self._procs[pid] = psutil.Process(pid)
                        self._last_cpu.setdefault(pid, 0.0)

    def _cpu(self, pid: int) -> float:
        proc = self._procs.get(pid)
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                # a process that exits keeps the last value read (its final seconds are lost)
                self._last_cpu[pid] = times.user + times.system
        return self._last_cpu.get(pid, 0.0)

    def _memory(self, pid: int) -> tuple[int, int]:
        """(RSS, the shared part of it) in bytes."""
        proc = self._procs.get(pid)
        if proc is None:
            return 0, 0
        try:
            info = proc.memory_info()
            return int(info.rss), int(getattr(info, "shared", 0))
        except psutil.Error:
            return 0, 0

    def _group_rss(self, pids: list[int]) -> int:
        """One process: its RSS. Several (PostgreSQL's backends): their private memory plus the
        largest shared part once, so shared_buffers is not counted once per backend."""
        memory = [self._memory(pid) for pid in pids]
        if len(memory) == 1:
            return memory[0][0]
        return sum(rss - shared for rss, shared in memory) + max((sh for _, sh in memory), default=0)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="proc-sampler")

    async def stop(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        ticks = 0
        while True:
            if self.refresh is not None and ticks % 4 == 0:
                with contextlib.suppress(Exception):
                    self.track(await self.refresh())
            self.sample()
            self.probes.append((time.time(), speed_probe_ms()))
            ticks += 1
            await asyncio.sleep(self.interval_s)

    def sample(self) -> None:
        all_pids = {pid for pids in self.groups.values() for pid in pids}
        for pid in all_pids:
            self._cpu(pid)
        for window in self._windows:
            for name, pids in self.groups.items():
                rss = self._group_rss(pids)
                window.rss_peak[name] = max(window.rss_peak.get(name, 0), rss)

    def open_window(self) -> ProcWindow:
        self.sample()
        window = ProcWindow(dict(self._last_cpu), {}, time.time(), machine_busy_s(),
                            machine_steal_s())
        self._windows.append(window)
        self.sample()
        return window

    def close_window(self, window: ProcWindow) -> dict[str, dict[str, float]]:
        self.sample()
        self._windows.remove(window)
        seconds = max(time.time() - window.t0, 1e-9)
        out: dict[str, dict[str, float]] = {}
        for name, pids in self.groups.items():
            spent = {p: self._last_cpu.get(p, 0.0) - window.cpu_start.get(p, 0.0) for p in pids}
            cpu = sum(spent.values())
            out[name] = {
                "cpu_s": round(cpu, 3),
                "cores": round(cpu / seconds, 3),
                "rss_peak_mib": round(window.rss_peak.get(name, 0) / 2**20, 1),
                "pids": len(pids),
            }
            labels = self.labels.get(name)
            if labels:
                by: dict[str, float] = {}
                for pid, used in spent.items():
                    label = labels.get(pid, "?")
                    by[label] = by.get(label, 0.0) + used
                out[name]["by"] = {k: round(v / seconds, 3) for k, v in sorted(by.items())}
        # everything else on the machine meanwhile (other engineers' tests...): the noise
        busy = machine_busy_s() - window.machine_busy0
        ours = sum(p["cpu_s"] for p in out.values())
        out["other"] = {"cpu_s": round(max(busy - ours, 0.0), 3),
                                  "cores": round(max(busy - ours, 0.0) / seconds, 3),
                                  "rss_peak_mib": 0.0, "pids": 0}
        # CPU our processes wanted and did not get: a busy host makes every figure worse
        steal = machine_steal_s() - window.steal0
        out["steal"] = {"cpu_s": round(steal, 3), "cores": round(steal / seconds, 3),
                        "rss_peak_mib": 0.0, "pids": 0}
        return out


def probe_summary(probes: list[tuple[float, float]], t0: float, t1: float) -> dict[str, Any]:
    """The host's speed over [t0, t1] (``speed_probe_ms``): median and spread of the probes."""
    values = [ms for t, ms in probes if t0 <= t <= t1]
    if not values:
        return {"n": 0}
    return {"n": len(values), **{f"{name}_ms": round(percentile(values, q), 2)
                                 for name, q in (("median", 0.5), ("p10", 0.1), ("p90", 0.9))}}


async def pg_counters(conn: asyncpg.Pool | asyncpg.Connection, database: str) -> dict[str, int]:
    """The run database's committed transactions (read-only ones too) and rows written, and the
    server's WAL flushes (``wal_sync``: cluster-wide, so other databases' writes count too)."""
    row = await conn.fetchrow(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS rows_written,"
        " (SELECT wal_sync FROM pg_stat_wal) AS wal_sync FROM pg_stat_database WHERE datname = $1",
        database,
    )
    return {k: int(row[k] or 0) for k in ("xact_commit", "rows_written", "wal_sync")} if row else {}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def speed_probe_ms(iterations: int = 20_000) -> float:
    """CPU milliseconds this process takes for a fixed loop of Python arithmetic (about 1 ms).

    The host's speed is not constant: on this 2-core virtual machine, idle, a loop of a million
    such iterations took anywhere from 46 to 97 ms of CPU within seconds: the physical cores are
    shared with other tenants. The probe runs with the process sampler, once a second, and each
    step reports its median and spread (``host_probe``), so runs can be compared knowing how fast
    the host was. CPU time, not wall time: waiting for a core (our own load, or steal) does not
    count; what our own load does to the caches does, a little."""
    t0 = time.process_time()
    total = 0
    for i in range(iterations):
        total += i * i
    return (time.process_time() - t0) * 1000
