"""Fixed-window counters in PostgreSQL, for tracking lookups and WhatsApp STATUS guesses.

In PostgreSQL rather than in the process: every intake instance sees the same counts, and a
restart does not hand a guesser a fresh budget. The cost is one upsert per lookup, small next to
the lookup itself at an office's volume. Old windows are deleted by the retention job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from fastapi import Request

from shared.http import Problem

from .settings import IntakeSettings


@dataclass(frozen=True)
class Limit:
    bucket: str
    max_hits: int


def window_start(now: datetime, window_s: int) -> datetime:
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_s, UTC)


def seconds_left(now: datetime, window_s: int) -> int:
    end = window_start(now, window_s) + timedelta(seconds=window_s)
    return max(1, math.ceil((end - now).total_seconds()))


async def hit(conn: asyncpg.Connection, bucket: str, window_s: int, now: datetime) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO rate_limit_hits AS h (bucket, window_start, hits) VALUES ($1, $2, 1)"
            " ON CONFLICT (bucket, window_start) DO UPDATE SET hits = h.hits + 1 RETURNING hits",
            bucket,
            window_start(now, window_s),
        )
    )


async def exceeded(
    conn: asyncpg.Connection, limits: Sequence[Limit], window_s: int, now: datetime
) -> Limit | None:
    """The first of ``limits`` whose bucket is full in the current window."""
    rows = await conn.fetch(
        "SELECT bucket, hits FROM rate_limit_hits WHERE window_start = $1 AND bucket = ANY($2)",
        window_start(now, window_s),
        [lim.bucket for lim in limits],
    )
    hits = {r["bucket"]: r["hits"] for r in rows}
    return next((lim for lim in limits if hits.get(lim.bucket, 0) >= lim.max_hits), None)


def too_many(
    seconds: int, title: str = "Terlalu banyak percobaan / Too many attempts",
    detail: str | None = None, code: str | None = None,
) -> Problem:  # fmt: skip
    """A 429 with ``Retry-After``: rate limits here, load shedding (``shedding.py``) too."""
    return Problem(
        429, title, detail or f"Coba lagi dalam {seconds} detik / try again in {seconds} seconds",
        headers={"Retry-After": str(seconds)}, extra={"code": code} if code else None,
    )  # fmt: skip


def client_of(request: Request, settings: IntakeSettings) -> str:
    """The client's address; X-Forwarded-For only when the proxy in front is trusted to set it
    (its last entry is the address the proxy saw)."""
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last[:64]
    return request.client.host if request.client else "unknown"
