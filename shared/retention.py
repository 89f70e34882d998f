"""Retention of personal data (UU PDP No. 27/2022: data is deleted when its purpose ends).

Every service keeps a copy of what it needs of the applicant (intake the request, printing the
name and NIK to print, courier the recipient and address, notify the phone numbers and the
messages sent). Each lists its :class:`Erasure` s: one statement that blanks or deletes at most
``$2`` rows whose purpose ended before the cut-off ``$1`` and answers how many (``UPDATE n`` /
``DELETE n``). :func:`run_once` runs them in batches (each batch its own statement, so a long
backlog never holds locks for long) under an advisory lock, so one instance at a time does it;
:func:`retention_loop` runs it every ``RETENTION_INTERVAL_S``.

The cut-off is ``now - PERSONAL_DATA_RETENTION_DAYS`` (90 by default) unless an erasure has its
own period (``after``: intake's conversations, rate-limit windows). :data:`DEAD_LETTERS` is one
in every service: a dead letter holds the raw event, NIK included.

Erased rows keep what is not personal (status, times, document type, partner, fee, tracking
code): the lifecycle stays reportable after the person's data is gone.

:func:`retention_loop` also prunes every service's ``inbox`` (:func:`inbox_pruning`): not personal
data, but without it the duplicate detector grows by every event consumed, for ever. An event id is
kept ``INBOX_RETENTION_DAYS`` (30): a duplicate comes from Kafka redelivering (an offset not
committed yet, a consumer group reset to earliest) or the outbox relay publishing twice, and neither
can reach past the topics' retention (7 days).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.db.pool import TRANSIENT_DB_ERRORS, Pool, advisory_key
from shared.logging import get_logger
from shared.runtime import Runtime

log = get_logger(__name__)

BATCH = 500


@dataclass(frozen=True)
class Erasure:
    name: str  # its count in the report, e.g. "print_jobs_erased"
    sql: str  # $1: the cut-off (timestamptz), $2: at most this many rows
    after: timedelta | None = None  # None: the personal-data retention period


DEAD_LETTERS = Erasure(
    "dead_letters_deleted",
    "DELETE FROM dead_letter WHERE id IN"
    " (SELECT id FROM dead_letter WHERE created_at < $1 ORDER BY id LIMIT $2)",
)


def inbox_pruning(days: float) -> Erasure:
    """Delete the inbox rows older than ``days`` (an ``Erasure``: same runner, own period)."""
    return Erasure(
        "inbox_rows_deleted",
        "DELETE FROM inbox WHERE (consumer, event_id) IN (SELECT consumer, event_id FROM inbox"
        " WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
        after=timedelta(days=days),
    )


async def run_once(
    pool: Pool,
    schema: str,
    erasures: Sequence[Erasure],
    retention_days: float,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Run every erasure to the end of its backlog; ``{name: rows, ..., "retention_days": d}``,
    or ``{"skipped": ...}`` when another instance holds the lock."""
    now = now or datetime.now(UTC)
    key = advisory_key(f"retention:{schema}")
    report: dict[str, Any] = {}
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return {"skipped": "another instance is running it"}
        try:
            for erasure in erasures:
                cutoff = now - (erasure.after or timedelta(days=retention_days))
                done = 0
                while True:
                    n = int((await conn.execute(erasure.sql, cutoff, BATCH)).split()[-1])
                    done += n
                    if n < BATCH:
                        break
                report[erasure.name] = done
        finally:
            # the pool does not reset sessions (shared/db/pool.py): the lock must not outlive us
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
            except BaseException:
                conn.terminate()  # a closed session releases its locks
                raise
    report["retention_days"] = retention_days
    return report


async def retention_loop(rt: Runtime, erasures: Sequence[Erasure]) -> None:
    """Every ``retention_interval_s``: :func:`run_once` of ``erasures`` and the inbox's pruning,
    logged when it erased anything."""
    s = rt.settings
    erasures = [*erasures, inbox_pruning(s.inbox_retention_days)]
    while True:
        try:
            report = await run_once(rt.pool, s.db_schema, erasures, s.personal_data_retention_days)
            if any(v for k, v in report.items() if k.endswith(("_erased", "_deleted"))):
                log.info("retention run", **report)
        except asyncio.CancelledError:
            raise
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("retention run interrupted", error=repr(exc))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.sleep(s.retention_interval_s)
