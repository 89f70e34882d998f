"""Replies to WhatsApp messages: queued in the transaction that decided them, sent by a loop.

A reply is free-form text, which Meta delivers only within 24 hours of the applicant's last
message: a reply still unsent after that is given up, not sent late. One applicant's replies go
out in order: a reply waits while an earlier one is unsent (after a crash, until the dead
sender's claim expires, ``REPLY_CLAIM_S``), so no question arrives after the answer to it. As in
notify, a crash after Meta accepted a reply and before it is marked sent sends it once more (the
Cloud API has no idempotency key); that window is one HTTP call.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.db.pool import TRANSIENT_DB_ERRORS
from shared.logging import get_logger
from shared.runtime import Runtime
from shared.whatsapp.client import WhatsAppClient, WhatsAppError

from .settings import IntakeSettings

log = get_logger(__name__)

WAKER = "replies"
FREE_FORM_WINDOW = timedelta(hours=24)


async def queue_reply(conn: asyncpg.Connection, wa_id: str, body: str) -> None:
    await conn.execute("INSERT INTO wa_outbound (wa_id, body) VALUES ($1, $2)", wa_id, body)


async def _claim(conn: asyncpg.Connection, claim_s: float, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        UPDATE wa_outbound SET claimed_until = now() + make_interval(secs => $1)
        WHERE id IN (
            SELECT o.id FROM wa_outbound o
            WHERE o.status = 'pending' AND o.next_attempt_at <= now()
              AND (o.claimed_until IS NULL OR o.claimed_until < now())
              -- one applicant's replies go out in the order they were decided: none while an
              -- earlier one is unsent (waiting for a retry, or claimed by a sender that died)
              AND NOT EXISTS (SELECT 1 FROM wa_outbound e
                              WHERE e.wa_id = o.wa_id AND e.status = 'pending' AND e.id < o.id)
            ORDER BY o.id LIMIT $2 FOR UPDATE OF o SKIP LOCKED)
        RETURNING id, wa_id, body, attempts, created_at
        """,
        claim_s,
        limit,
    )


async def send_due(rt: Runtime, limit: int = 50) -> int:
    """Send what is due, oldest first; return how many were handled."""
    s: IntakeSettings = rt.settings  # type: ignore[assignment]
    client: WhatsAppClient = rt.extras["whatsapp"]
    async with rt.pool.acquire() as conn:
        due = await _claim(conn, s.reply_claim_s, limit)
        for row in sorted(due, key=lambda r: r["id"]):
            if datetime.now(UTC) - row["created_at"] > FREE_FORM_WINDOW:
                await _finish(conn, row["id"], "failed", error="outside the 24-hour reply window")
                continue
            try:
                wamid = await client.send_text(row["wa_id"], row["body"])
            except WhatsAppError as exc:
                attempts = row["attempts"] + 1
                if exc.transient and attempts < s.reply_max_attempts:
                    delay = min(s.reply_retry_start_s * 2 ** (attempts - 1), s.reply_retry_cap_s)
                    await conn.execute(
                        "UPDATE wa_outbound SET attempts = $2, error = $3, claimed_until = NULL,"
                        " next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
                        row["id"], attempts, exc.reason[:500], delay,
                    )  # fmt: skip
                else:
                    await _finish(conn, row["id"], "failed", error=exc.reason[:500])
                log.warning("whatsapp reply not sent", reply_id=row["id"], error=exc.reason,
                            transient=exc.transient, attempts=attempts)  # fmt: skip
                continue
            await _finish(conn, row["id"], "sent", wamid=wamid)
    return len(due)


async def _finish(
    conn: asyncpg.Connection, reply_id: int, status: str, *, wamid: str | None = None,
    error: str | None = None,
) -> None:  # fmt: skip
    await conn.execute(
        "UPDATE wa_outbound SET status = $2, wamid = $3, error = $4, attempts = attempts + 1,"
        " claimed_until = NULL, sent_at = CASE WHEN $2 = 'sent' THEN now() END WHERE id = $1",
        reply_id,
        status,
        wamid,
        error,
    )


async def reply_sender(rt: Runtime) -> None:
    """Background loop: woken when a webhook queued replies, polling once a second otherwise."""
    waker = rt.waker(WAKER)
    while True:
        waker.clear()
        try:
            handled = await send_due(rt)
        except asyncio.CancelledError:
            raise
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("reply sender interrupted, retrying", error=repr(exc))
            handled = 0
        if handled:
            continue
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(waker.wait(), 1.0)
