"""The inbox (every service's duplicate detector) is pruned by age, in batches, by the retention
runner every service runs; what is younger than INBOX_RETENTION_DAYS stays and still dedupes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared import retention
from shared.db.pool import Pool
from shared.retention import BATCH, inbox_pruning, run_once
from tests.support.infra import migrated_pool

pytestmark = pytest.mark.integration

MIGRATIONS = Path(retention.__file__).parents[1] / "services" / "printing" / "migrations"
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture
async def db(database: str) -> AsyncIterator[tuple[str, Pool]]:
    schema = f"ib_{uuid.uuid4().hex[:8]}"
    async with migrated_pool(database, schema, MIGRATIONS) as pool:
        yield schema, pool


async def _inbox(pool: Pool, n: int, at: datetime) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, topic, received_at)"
        " SELECT 'printing', e, 'request-registered', $2 FROM unnest($1::uuid[]) AS e", ids, at)
    return ids


async def test_event_ids_older_than_the_inbox_retention_are_deleted_younger_ones_kept(
    db: tuple[str, Pool],
) -> None:
    schema, pool = db
    old = await _inbox(pool, BATCH * 2 + 7, NOW - timedelta(days=30, minutes=1))  # 3 batches
    young = await _inbox(pool, 5, NOW - timedelta(days=29, hours=23))

    report = await run_once(pool, schema, [inbox_pruning(30)], retention_days=90, now=NOW)

    assert report["inbox_rows_deleted"] == len(old)
    left = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM inbox")}
    assert left == set(young)
    # what is kept still dedupes: the consumer's insert of a known id inserts nothing
    assert await pool.fetchval(
        "INSERT INTO inbox (consumer, event_id, topic) VALUES ('printing', $1, 't')"
        " ON CONFLICT DO NOTHING RETURNING event_id", young[0]) is None
    # the personal-data period (here 0 days) does not shorten the inbox's own
    again = await run_once(pool, schema, [inbox_pruning(30)], retention_days=0, now=NOW)
    assert again["inbox_rows_deleted"] == 0


async def test_the_prune_reads_the_received_at_index_not_the_whole_table(
    db: tuple[str, Pool],
) -> None:
    _, pool = db
    await _inbox(pool, 20_000, NOW - timedelta(days=1))
    await pool.execute("ANALYZE inbox")
    plan = "\n".join(r[0] for r in await pool.fetch(
        "EXPLAIN " + inbox_pruning(30).sql, NOW - timedelta(days=30), BATCH))
    assert "inbox_received_at" in plan, plan


async def test_every_services_retention_loop_prunes_its_inbox_with_the_configured_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[Sequence[retention.Erasure]] = []

    async def once(pool: Any, schema: str, erasures: Sequence[retention.Erasure],
                   retention_days: float, now: Any = None) -> dict[str, Any]:
        ran.append(erasures)
        raise asyncio.CancelledError  # one round is enough

    monkeypatch.setattr(retention, "run_once", once)
    settings = SimpleNamespace(db_schema="printing", personal_data_retention_days=90.0,
                               retention_interval_s=3600.0, inbox_retention_days=12.0)
    with pytest.raises(asyncio.CancelledError):
        await retention.retention_loop(SimpleNamespace(pool=None, settings=settings),  # type: ignore[arg-type]
                                       [retention.DEAD_LETTERS])
    (erasures,) = ran
    assert [e.name for e in erasures] == ["dead_letters_deleted", "inbox_rows_deleted"]
    assert erasures[1].after == timedelta(days=12)
