"""What a killed benchmark run leaves behind, and sweeping it at the next run's start.

A run drops its database and deletes its topics when it ends; a run that is killed (Ctrl-C twice,
``kill -9``, a closed terminal, a machine that stops) leaves them, and each leftover costs the
shared broker and PostgreSQL for as long as they run: 881 partitions of 9 killed runs made the idle
broker use 0.025 cores instead of 0.016. So every run writes a record of what it made
(``.local/bench-runs/<run id>.json``: its process, database and topic prefix) before it makes it,
removes the record once it has cleaned up, and sweeps, when it starts, what the records of runs
whose process is gone name. The services and the sandbox run in sessions of their own, so they
outlive a killed run (and went on polling its topics and tables, costing the next runs CPU): the
sweep stops them first, found by the run's topic prefix in their environment. ``--keep`` marks its
record kept: its database and topics are not swept, and the next run says so (drop them by hand,
then delete the record); its leftover processes are stopped all the same.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from deploy.local.system import ROOT

RECORDS = ROOT / ".local" / "bench-runs"


@dataclass
class Record:
    run_id: str
    pid: int
    started: float  # the process's create time: a pid reused by another process is not the run
    bootstrap: str
    postgres: str  # host:port of the server the database is on
    prefix: str
    database: str = ""
    kept: bool = False
    directory: str = str(RECORDS)

    @property
    def path(self) -> Path:
        return Path(self.directory) / f"{self.run_id}.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def alive(self) -> bool:
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


def server_of(dsn: str) -> str:
    """``host:port`` of a ``postgresql://user:password@host:port/db`` DSN."""
    return dsn.rpartition("@")[2].partition("/")[0]


def this_process(
    run_id: str, bootstrap: str, postgres: str, prefix: str, directory: Path = RECORDS
) -> Record:
    me = psutil.Process()
    return Record(run_id, me.pid, me.create_time(), bootstrap, postgres, prefix,
                  directory=str(directory))


def records(directory: Path = RECORDS) -> list[Record]:
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            found.append(Record(**{**json.loads(path.read_text()), "directory": str(directory)}))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)  # half-written by a run killed while writing it
    return found


def processes_of(prefix: str) -> list[psutil.Process]:
    """The processes a run started and that are still running: every system process gets the
    run's ``KAFKA_TOPIC_PREFIX`` (unique to it) in its environment."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("KAFKA_TOPIC_PREFIX") == prefix:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop(processes: list[psutil.Process], timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL for those still running after ``timeout_s``: how many were stopped."""
    for proc in processes:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout_s)
    return len(processes)


def orphaned(
    bootstrap: str, postgres: str, directory: Path = RECORDS
) -> tuple[list[Record], list[Record]]:
    """(to sweep, kept): the records of dead runs on this broker and PostgreSQL server."""
    dead = [r for r in records(directory)
            if (r.bootstrap, r.postgres) == (bootstrap, postgres) and not r.alive()]
    return [r for r in dead if not r.kept], [r for r in dead if r.kept]
