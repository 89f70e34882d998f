"""bench.leftovers: what a killed benchmark run left is swept at the next run's start; what a live
run or a ``--keep`` run made is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bench import leftovers
from bench.stack import Stack, sweep_leftovers
from tests.support.infra import ADMIN_DSN, KAFKA, drop_database

pytestmark = pytest.mark.integration


async def _databases() -> set[str]:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


async def _topics(prefix: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if t.startswith(prefix)}
    finally:
        await admin.close()


async def _made(records: Path) -> Stack:
    stack = Stack(bootstrap=KAFKA, run_dir=records / "logs", partitions=1, records_dir=records)
    await stack.create()
    assert stack.database in await _databases()
    assert await _topics(stack.prefix)
    return stack


def _leftover_process(stack: Stack) -> subprocess.Popen[bytes]:
    """A process of ``stack``'s system: its own session (it outlives the run), the run's env."""
    env = {**os.environ, **stack.env()}
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env,
                            start_new_session=True)


def _killed(stack: Stack) -> None:
    """As if ``stack`` had been made by a process that is gone now."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert stack.record is not None
    stack.record.pid = gone.pid
    stack.record.save()


async def test_a_killed_runs_database_and_topics_are_swept_a_live_or_kept_ones_are_not(
    infra: None, tmp_path: Path
) -> None:
    killed, kept, live = await _made(tmp_path), await _made(tmp_path), await _made(tmp_path)
    procs = {s.run_id: _leftover_process(s) for s in (killed, kept, live)}
    try:
        _killed(killed)
        _killed(kept)
        kept.keep()

        lines = await sweep_leftovers(KAFKA, tmp_path)

        # a dead run's processes are stopped, kept or not; a live run's are its own
        assert procs[killed.run_id].poll() is not None
        assert procs[kept.run_id].poll() is not None
        assert procs[live.run_id].poll() is None
        assert "1 leftover processes stopped" in lines[0]
        assert "(1 leftover processes stopped)" in lines[1]

        assert killed.database not in await _databases()
        assert not await _topics(killed.prefix)
        assert killed.record is not None and not killed.record.path.exists()
        for untouched in (kept, live):
            assert untouched.database in await _databases()
            assert await _topics(untouched.prefix)
        assert [line.split()[:3] for line in lines] == [
            ["swept", "run", killed.run_id], ["kept", "(--keep)", "run"]]
        assert kept.run_id in lines[1]

        await live.destroy()  # a run that ends cleans up after itself, record included
        assert live.database not in await _databases()
        assert not list(tmp_path.glob(f"{live.run_id}.json"))
        # nothing more to sweep; the kept run is listed again, with no process left to stop
        assert await sweep_leftovers(KAFKA, tmp_path) == [
            lines[1].replace(" (1 leftover processes stopped)", "")]
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        for stack in (killed, kept, live):
            await drop_database(stack.database)
            await stack.destroy()


def test_a_record_is_alive_only_while_its_very_process_runs(tmp_path: Path) -> None:
    me = leftovers.this_process(uuid.uuid4().hex[:8], KAFKA, "h:1", "bench-x.", tmp_path)
    assert me.alive()
    me.started -= 60  # the same pid, another process (the pid was reused)
    assert not me.alive()
    me.save()
    (tmp_path / "broken.json").write_text("{")  # a run killed while writing its record
    assert [r.run_id for r in leftovers.records(tmp_path)] == [me.run_id]
    assert not (tmp_path / "broken.json").exists()
    assert leftovers.orphaned(KAFKA, "h:1", tmp_path)[0][0].run_id == me.run_id
    assert leftovers.orphaned("elsewhere:9092", "h:1", tmp_path) == ([], [])
    assert leftovers.orphaned(KAFKA, "h:2", tmp_path) == ([], [])
