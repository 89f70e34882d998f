"""Retention (UU PDP No. 27/2022: personal data is deleted when its purpose ends).

Once a request is finished (delivered, returned to the office or rejected) and the retention
period (``PERSONAL_DATA_RETENTION_DAYS``) has passed, the applicant's name, NIK, phone and the
delivery address are erased; the lifecycle record stays: status, timeline, document type,
partner, fee, service date, tracking code and the phone's last 4 digits (for public tracking).
The same run deletes what only served a conversation or a rate limit, and old dead letters
(they hold raw events, NIK included). One instance runs it at a time (an advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared.db.pool import TRANSIENT_DB_ERRORS, advisory_key
from shared.logging import get_logger
from shared.runtime import Runtime

from . import repository
from .settings import IntakeSettings

log = get_logger(__name__)

_BATCH = 500
_PURGES = {
    # what, SQL deleting rows older than $1
    "conversations": "DELETE FROM wa_conversations WHERE updated_at < $1",
    "replies": "DELETE FROM wa_outbound WHERE status <> 'pending' AND created_at < $1",
    "rate_limit_windows": "DELETE FROM rate_limit_hits WHERE window_start < $1",
}


async def run_once(
    pool: asyncpg.Pool, settings: IntakeSettings, retention_days: float | None = None
) -> dict[str, Any]:
    now = datetime.now(UTC)
    days = settings.personal_data_retention_days if retention_days is None else retention_days
    key = advisory_key(f"retention:{settings.db_schema}")
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return {"skipped": "another instance is running it"}
        try:
            erased = 0
            while True:
                async with conn.transaction():
                    n = await repository.erase_personal_data(conn, now - timedelta(days=days), _BATCH)
                erased += n
                if n < _BATCH:
                    break
            ttl = timedelta(hours=settings.conversation_ttl_hours)
            cutoffs = {
                "conversations": now - ttl,
                "replies": now - ttl,
                "rate_limit_windows": now - timedelta(days=1),
            }
            report: dict[str, Any] = {"requests_erased": erased}
            for what, sql in _PURGES.items():
                report[f"{what}_deleted"] = _count(await conn.execute(sql, cutoffs[what]))
            report["inbound_ids_deleted"] = _count(await conn.execute(
                "DELETE FROM wa_inbound WHERE received_at < $1",
                now - timedelta(days=settings.inbound_dedup_days),
            ))  # fmt: skip
            report["dead_letters_deleted"] = _count(await conn.execute(
                "DELETE FROM dead_letter WHERE created_at < $1", now - timedelta(days=days)
            ))  # fmt: skip
        finally:
            # the pool does not reset sessions (shared/db/pool.py): the lock must not outlive us
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
            except BaseException:
                conn.terminate()  # a closed session releases its locks
                raise
    report["retention_days"] = days
    return report


def _count(status: str) -> int:
    return int(status.split()[-1])


async def retention_loop(rt: Runtime) -> None:
    s: IntakeSettings = rt.settings  # type: ignore[assignment]
    while True:
        try:
            report = await run_once(rt.pool, s)
            if any(v for k, v in report.items() if k.endswith(("_erased", "_deleted"))):
                log.info("retention run", **report)
        except asyncio.CancelledError:
            raise
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("retention run interrupted", error=repr(exc))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.sleep(s.retention_interval_s)
