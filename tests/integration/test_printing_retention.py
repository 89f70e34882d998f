"""Printing's retention against a real PostgreSQL: a finished job's applicant data is erased once
the retention period has passed, nothing else is, and a second run erases nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.printing import retention
from shared.db.pool import Pool
from shared.retention import run_once
from tests.support.infra import migrated_pool

pytestmark = pytest.mark.integration

MIGRATIONS = Path(retention.__file__).parent / "migrations"
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=91)
RECENT = NOW - timedelta(days=89)


@pytest.fixture
async def db(database: str) -> AsyncIterator[tuple[str, Pool]]:
    schema = f"pr_{uuid.uuid4().hex[:8]}"
    async with migrated_pool(database, schema, MIGRATIONS) as pool:
        yield schema, pool  # run_once's advisory lock is per schema


async def job(pool: Pool, status: str, updated_at: datetime) -> uuid.UUID:
    request_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO print_jobs (request_id, tracking_code, document_type, applicant_name,"
        " applicant_nik, correlation_id, status, document_number, reject_code, reject_reason,"
        " registered_at, updated_at)"
        " VALUES ($1, $2, 'kk', 'Siti Aminah', '3516014101900001', $3, $4, $5, $6, $7, $8, $9)",
        request_id, f"KTM-{request_id.hex[:6]}", str(request_id), status,
        f"KK-{request_id.hex[:8]}" if status == "printed" else None,
        "data_mismatch" if status == "rejected" else None,
        "NIK 3516014101900001 tidak cocok" if status == "rejected" else None,
        updated_at - timedelta(days=1), updated_at,
    )  # fmt: skip
    return request_id


async def test_finished_jobs_past_the_period_lose_the_applicant_data(
    db: tuple[str, Pool],
) -> None:
    schema, pool = db
    printed_old = await job(pool, "printed", OLD)
    rejected_old = await job(pool, "rejected", OLD)
    printed_recent = await job(pool, "printed", RECENT)
    queued_old = await job(pool, "queued", OLD)
    claimed_old = await job(pool, "claimed", OLD)
    before = {r["request_id"]: dict(r) for r in await pool.fetch("SELECT * FROM print_jobs")}

    report = await run_once(pool, schema, retention.ERASURES, 90, now=NOW)

    assert report == {"print_jobs_erased": 2, "dead_letters_deleted": 0, "retention_days": 90}
    after = {r["request_id"]: dict(r) for r in await pool.fetch("SELECT * FROM print_jobs")}
    for erased in (printed_old, rejected_old):
        row = after[erased]
        assert row["applicant_name"] is None and row["applicant_nik"] is None
        assert row["reject_reason"] is None and row["personal_data_erased_at"] is not None
        kept = {k: v for k, v in before[erased].items()
                if k not in {"applicant_name", "applicant_nik", "reject_reason",
                             "personal_data_erased_at"}}
        assert {k: row[k] for k in kept} == kept  # status, number, code, times: unchanged
    for untouched in (printed_recent, queued_old, claimed_old):
        assert after[untouched] == before[untouched]

    again = await run_once(pool, schema, retention.ERASURES, 90, now=NOW)
    assert again["print_jobs_erased"] == 0


async def test_old_dead_letters_are_deleted(db: tuple[str, Pool]) -> None:
    schema, pool = db
    for created, offset in ((OLD, 1), (RECENT, 2)):
        await pool.execute(
            "INSERT INTO dead_letter (topic, partition, \"offset\", value, reason, created_at)"
            " VALUES ('request-registered', 0, $1, $2, 'bad', $3)",
            offset, b'{"nik": "3516014101900001"}', created,
        )  # fmt: skip
    report = await run_once(pool, schema, retention.ERASURES, 90, now=NOW)
    assert report["dead_letters_deleted"] == 1
    assert [r["offset"] for r in await pool.fetch('SELECT "offset" FROM dead_letter')] == [2]
