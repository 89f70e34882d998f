"""The sender loop: sends each pending notification once, as a WhatsApp template message.

Exactly one message per event: the consumer writes one row per ``event_id``; the sender claims due
rows (``pending``, or ``sending`` whose claim ran out after a crash), calls the Cloud API, and marks
the row ``sent`` with the returned message id. The one window where a message can go out twice is a
crash (or a lost database) after the Cloud API accepted the message and before ``sent`` is stored:
that row is claimed again when its claim runs out. The Cloud API has no idempotency key, so the
window is kept to one HTTP call per row.

A message waits until its recipient is known (request-registered can be consumed after a later
event, since topics are not ordered between each other). Messages of one request go out in the
order of their facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import asyncpg

from shared.db.pool import TRANSIENT_DB_ERRORS
from shared.logging import get_logger
from shared.privacy import mask_phone

from .templates import TEMPLATES, context, params_for, render
from shared.whatsapp.client import WhatsAppClient, WhatsAppError

if TYPE_CHECKING:
    from shared.runtime import Runtime

log = get_logger(__name__)

_CLAIM = """
UPDATE notifications n SET status = 'sending', claimed_until = now() + make_interval(secs => $2)
FROM recipients r
WHERE n.request_id = r.request_id AND n.id IN (
    SELECT n2.id FROM notifications n2 JOIN recipients r2 USING (request_id)
    WHERE n2.next_attempt_at <= now()
      AND (n2.status = 'pending' OR (n2.status = 'sending' AND n2.claimed_until < now()))
    ORDER BY n2.next_attempt_at, n2.occurred_at LIMIT $1 FOR UPDATE OF n2 SKIP LOCKED)
RETURNING n.id, n.request_id, n.event_type, n.event_data, n.attempts, n.occurred_at,
    r.phone, r.name, r.tracking_code, r.document_type, r.partner, r.cod_fee,
    r.requirement_documents
"""


async def sender_loop(rt: "Runtime") -> None:
    wake = rt.waker("sender")
    client: WhatsAppClient = rt.extras["whatsapp"]
    limit = asyncio.Semaphore(rt.settings.send_concurrency)
    while True:
        wake.clear()
        try:
            rows = await rt.pool.fetch(_CLAIM, rt.settings.send_concurrency * 4, rt.settings.send_claim_s)
            if not rows:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
                continue
            by_request: dict[Any, list[asyncpg.Record]] = defaultdict(list)
            for row in sorted(rows, key=lambda r: r["occurred_at"]):
                by_request[row["request_id"]].append(row)

            async def send_in_order(group: list[asyncpg.Record]) -> None:
                async with limit:
                    for row in group:
                        await send_one(rt, client, row)

            await asyncio.gather(*(send_in_order(g) for g in by_request.values()))
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("sender cannot reach the database", error=repr(exc))
            await asyncio.sleep(1.0)
        except Exception:  # noqa: BLE001 - a bug must not stop every future message
            log.exception("sender error")
            await asyncio.sleep(1.0)


async def send_one(rt: "Runtime", client: WhatsAppClient, row: asyncpg.Record) -> None:
    recipient = {
        "name": row["name"],
        "tracking_code": row["tracking_code"],
        "document_type": row["document_type"],
        "partner": row["partner"],
        "cod_fee": row["cod_fee"],
        "requirement_documents": json.loads(row["requirement_documents"]),
    }
    event_type = row["event_type"]
    params = params_for(event_type, context(recipient, json.loads(row["event_data"])))
    template = TEMPLATES[event_type].name
    try:
        wamid = await client.send_template(row["phone"], template, params)
    except WhatsAppError as exc:
        attempts = row["attempts"] + 1
        s = rt.settings
        if exc.transient and attempts < s.send_max_attempts:
            delay = min(s.send_retry_cap_s, s.send_retry_start_s * 2 ** (attempts - 1))
            await rt.pool.execute(
                "UPDATE notifications SET status = 'pending', attempts = $2, error = $3,"
                " next_attempt_at = now() + make_interval(secs => $4), claimed_until = NULL"
                " WHERE id = $1",
                row["id"],
                attempts,
                exc.reason,
                delay,
            )
            log.warning("whatsapp send failed, will retry", attempts=attempts, retry_in_s=delay,
                        reason=exc.reason, request_id=str(row["request_id"]))
        else:
            await rt.pool.execute(
                "UPDATE notifications SET status = 'failed', attempts = $2, error = $3,"
                " claimed_until = NULL WHERE id = $1",
                row["id"],
                attempts,
                exc.reason,
            )
            log.error("whatsapp message given up", attempts=attempts, reason=exc.reason,
                      request_id=str(row["request_id"]))
        return
    await rt.pool.execute(
        "UPDATE notifications SET status = 'sent', wamid = $2, template = $3, body = $4,"
        " attempts = attempts + 1, sent_at = now(), claimed_until = NULL, error = NULL"
        " WHERE id = $1",
        row["id"],
        wamid,
        template,
        render(event_type, params),
    )
    log.info("whatsapp sent", request_id=str(row["request_id"]), event_type=event_type,
             to=mask_phone(row["phone"]), wamid=wamid)
