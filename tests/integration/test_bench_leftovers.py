"""bench.leftovers: what a killed benchmark run left is swept at the next run's start; what a live
run or a ``--keep`` run made is left alone."""

from __future__ import annotations

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
    try:
        _killed(killed)
        _killed(kept)
        kept.keep()

        lines = await sweep_leftovers(KAFKA, tmp_path)

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
        assert await sweep_leftovers(KAFKA, tmp_path) == lines[1:]  # nothing more to sweep
    finally:
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
