"""The system under test: its own database, topic namespace, consumer groups and ports.

One benchmark run never touches what ``make run`` or the tests use: a fresh database
``ketanmu_bench_<id>``, topics and groups under the prefix ``bench-<id>.``, free ports, logs under
the run's result folder. Kafka and PostgreSQL are shared, so their processes are found here too
(the broker from the port it listens on, PostgreSQL's backends from ``pg_stat_activity``).
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

from bench import leftovers
from deploy.local.system import ROOT, SERVICES, System
from shared.kafka.admin import create_topics
from tests.support.infra import (
    ADMIN_DSN,
    create_database,
    delete_namespace,
    drop_database,
    dsn_for,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    bootstrap: str
    run_dir: Path
    partitions: int = 6
    env_overrides: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    database: str = ""
    system: System | None = None
    # second instances (scale-out check), keyed by service name
    extra: dict[str, System] = field(default_factory=dict)
    # what a run killed before its cleanup leaves, for the next run to sweep (bench/leftovers.py)
    record: leftovers.Record | None = None
    records_dir: Path = leftovers.RECORDS

    @property
    def prefix(self) -> str:
        return f"bench-{self.run_id}."

    @property
    def dsn(self) -> str:
        return dsn_for(self.database)

    def topic(self, name: str) -> str:
        return self.prefix + name

    def group(self, service: str) -> str:
        return self.prefix + service

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.dsn,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_TOPIC_PREFIX": self.prefix,
            "KAFKA_GROUP_PREFIX": self.prefix,
            "KAFKA_TOPIC_PARTITIONS": str(self.partitions),
            # the partners answer at once: their own delay is not ours to measure
            "SANDBOX_STEP_DELAY_MS": "0",
            "SANDBOX_AUTOPLAY": "true",
            # partners call back from many servers at once; 32 made them the bottleneck at 50/s
            # (Little: 150 callbacks/s x 0.2-0.3 s each under load)
            "SANDBOX_CALLBACK_CONCURRENCY": "128",
            "LOG_LEVEL": "INFO",
            # intake's daily quota of online requests per document type (an office takes ~250 a
            # day): the benchmark registers far more than a day's worth
            "DAILY_QUOTA_DEFAULT": "100000000",
            **self.env_overrides,
        }

    async def create(self) -> None:
        # the record first: a run killed from here on leaves nothing the next run cannot find
        self.record = leftovers.this_process(
            self.run_id, self.bootstrap, leftovers.server_of(ADMIN_DSN), self.prefix,
            self.records_dir)
        self.record.save()
        self.database = await create_database("ketanmu_bench")
        self.record.database = self.database
        self.record.save()
        await create_topics(self.bootstrap, self.partitions, prefix=self.prefix)

    def keep(self) -> None:
        """``--keep``: the next runs leave this one's database and topics alone."""
        if self.record is not None:
            self.record.kept = True
            self.record.save()

    def start(self, timeout_s: float = 120.0, attempts: int = 3) -> System:
        for attempt in range(attempts):
            ports = {name: free_port() for name in ("sandbox", *SERVICES)}
            self.system = System(ports=ports, env=self.env(), run_dir=self.run_dir,
                                 python=sys.executable)
            try:
                self.system.start_all(timeout_s=timeout_s)
                return self.system
            except RuntimeError as exc:
                # a free port can be taken (by any outgoing connection) before a service binds it
                self.system.stop_all()
                if "address already in use" not in str(exc) or attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    def start_second_instance(self, service: str, timeout_s: float = 120.0) -> System:
        """Another process of ``service`` in the same consumer group, on its own HTTP port."""
        assert self.system is not None
        for attempt in range(3):
            ports = dict(self.system.ports)
            ports[service] = free_port()
            second = System(ports=ports, env=self.env(), run_dir=self.run_dir / "second",
                            python=sys.executable)
            second.start(service)
            try:
                second.wait_healthy([service], timeout_s=timeout_s)
                break
            except RuntimeError as exc:  # its port was taken meanwhile: another one
                second.stop(service)
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
        self.extra[service] = second
        return second

    def stop(self) -> None:
        for service, second in self.extra.items():
            second.stop(service)
        self.extra.clear()
        if self.system is not None:
            self.system.stop_all()

    async def destroy(self) -> None:
        await _drop(self.bootstrap, self.database, self.prefix)
        if self.record is not None:
            self.record.remove()

    # --- processes ------------------------------------------------------------------------------

    def service_pids(self) -> dict[str, int]:
        """Every process of the system: ``intake``, ..., ``sandbox``, ``printing#2``..."""
        pids: dict[str, int] = {}
        if self.system is not None:
            for name in ("sandbox", *SERVICES):
                pid = self.system.pid(name)
                if pid:
                    pids[name] = pid
        for service, second in self.extra.items():
            pid = second.pid(service)
            if pid:
                pids[f"{service}#2"] = pid
        return pids


async def _drop(bootstrap: str, database: str, prefix: str) -> int:
    """Drop ``database`` (if named) and delete the topics under ``prefix``: how many."""
    if database:
        await drop_database(database)
    return await delete_namespace(prefix, bootstrap)


async def sweep_leftovers(bootstrap: str, directory: Path = leftovers.RECORDS) -> list[str]:
    """Stop the processes and drop what killed runs on ``bootstrap`` and our PostgreSQL left
    (bench/leftovers.py): one line per run."""
    doomed, kept = leftovers.orphaned(bootstrap, leftovers.server_of(ADMIN_DSN), directory)
    # the processes first, a kept run's too: they hold the database's connections and poll its
    # topics
    stopped = {r.run_id: leftovers.stop(leftovers.processes_of(r.prefix)) for r in [*doomed, *kept]}
    lines = []
    for record in doomed:
        topics_deleted = await _drop(bootstrap, record.database, record.prefix)
        record.remove()
        lines.append(f"swept run {record.run_id} (process {record.pid} gone): "
                     f"{stopped[record.run_id]} leftover processes stopped, database "
                     f"{record.database or '-'}, {topics_deleted} topics {record.prefix}*")
    for record in kept:
        lines.append(f"kept (--keep) run {record.run_id}: database {record.database}, topics "
                     f"{record.prefix}*; drop them by hand, then delete {record.path}"
                     + (f" ({n} leftover processes stopped)" if (n := stopped[record.run_id]) else ""))
    return lines


def _listens(pid: int, port: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in psutil.Process(pid).net_connections(kind="tcp"))
    except psutil.Error:
        return False


def kafka_pid(bootstrap: str) -> int | None:
    """The broker's JVM: infra.sh's pid file whose process listens on the bootstrap port, else
    whichever process listens there (a scan of every process's sockets: slow, so callers cache)."""
    port = int(bootstrap.rsplit(":", 1)[1])
    homes = [os.environ.get("KAFKA_HOME", ""), ".local/kafka", ".local/kafka-test"]
    for home in filter(None, homes):
        try:
            pid = int((ROOT / home / "kafka.pid").read_text())
        except (OSError, ValueError):
            continue
        if _listens(pid, port):
            return pid
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    except psutil.Error:
        pass
    return None


async def postgres_pids(
    conn: asyncpg.Pool | asyncpg.Connection, database: str, labels: dict[int, str] | None = None
) -> dict[str, list[int]]:
    """PostgreSQL's processes that work for this run: the backends connected to its database
    (not the benchmark's own), and the server's background processes (WAL writer, checkpointer,
    ...), which every database shares. Backends of other databases (other engineers' tests) are
    left out. ``labels``, if given, is filled with each backend's service: its
    ``application_name`` (the service's schema; a relay's ``<schema>-relay`` counts as its
    service's)."""
    rows = await conn.fetch(
        "SELECT pid, datname, backend_type, application_name FROM pg_stat_activity"
    )
    own = [r["pid"] for r in rows if r["datname"] == database
           and not (r["application_name"] or "").startswith("ketanmu-bench")]
    if labels is not None:
        labels.clear()
        for r in rows:
            if r["pid"] in own:
                labels[r["pid"]] = (r["application_name"] or "?").removesuffix("-relay")
    background = [r["pid"] for r in rows if r["backend_type"] != "client backend"
                  and r["datname"] is None]
    postmaster = None
    if background:
        with_parent = psutil.Process(background[0]).ppid() if psutil.pid_exists(background[0]) else None
        postmaster = with_parent
    return {"postgres": own, "postgres-server": background + ([postmaster] if postmaster else [])}
