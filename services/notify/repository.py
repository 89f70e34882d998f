"""Notify's tables: a notification's WhatsApp fate, status callbacks, the applicants' windows."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.logging import get_logger
from shared.whatsapp.client import InboundMessage, MessageStatus, StatusError

from .domain import RE_ENGAGEMENT_ERROR, advance_wa_status, parse_callback_ref

log = get_logger(__name__)

_NOTE_COLUMNS = "id, request_id, status, wamid, kind, wa_status, wa_status_at, wa_error"


async def mark_sent(
    conn: asyncpg.Connection,
    notification_id: int,
    wamid: str,
    *,
    kind: str | None = None,
    template: str | None = None,
    body: str | None = None,
) -> None:
    """``wamid`` was accepted for this notification (the send's answer, or a status callback).

    Call inside a transaction. A second accepted message for one notification is the duplicate
    the window allows: logged loudly; the first wamid stays the notification's.
    """
    current = await conn.fetchrow(
        f"SELECT {_NOTE_COLUMNS} FROM notifications WHERE id = $1 FOR UPDATE", notification_id
    )
    if current is None:
        return
    if current["wamid"] is not None and current["wamid"] != wamid:
        log.error("a second message was accepted for one notification (the duplicate window)",
                  request_id=str(current["request_id"]), wamid=wamid, first_wamid=current["wamid"])
        return
    note = await conn.fetchrow(
        "UPDATE notifications SET status = 'sent', wamid = $2, kind = COALESCE($3, kind),"
        " template = COALESCE($4, template), body = COALESCE($5, body),"
        " sent_at = COALESCE(sent_at, now()), claimed_until = NULL, claim_token = NULL,"
        f" error = NULL, source = NULL WHERE id = $1 RETURNING {_NOTE_COLUMNS}",
        notification_id, wamid, kind, template, body,
    )
    await _fold_statuses(conn, note)  # callbacks may have come before the answer


@dataclass(frozen=True)
class Accepted:
    """A message the Cloud API accepted (its answer), to be stored by ``mark_sent_many``."""

    notification_id: int
    request_id: Any
    wamid: str
    kind: str | None = None
    template: str | None = None
    body: str | None = None


# mark_sent for many rows in one statement, on its own (no BEGIN and COMMIT around it): the common
# case. The wamid condition is mark_sent's duplicate check (re-evaluated on the locked row's latest
# version). A row whose wamid already has status callbacks (they came before the answer) is left
# for mark_sent, which folds them in the same transaction as it marks the row. has_next tells the
# caller whether the recipient's next message may now be due.
_MARK_SENT_MANY = """
UPDATE notifications n
SET status = 'sent', wamid = s.wamid, kind = COALESCE(s.kind, n.kind),
    template = COALESCE(s.template, n.template), body = COALESCE(s.body, n.body),
    sent_at = COALESCE(n.sent_at, now()), claimed_until = NULL, claim_token = NULL,
    error = NULL, source = NULL
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
    AS s(id, wamid, kind, template, body)
WHERE n.id = s.id AND (n.wamid IS NULL OR n.wamid = s.wamid)
    AND NOT EXISTS (SELECT 1 FROM whatsapp_statuses w WHERE w.wamid = s.wamid)
RETURNING n.id,
    EXISTS (SELECT 1 FROM notifications e
            WHERE e.request_id = n.request_id AND e.recipient = n.recipient AND e.id <> n.id
              AND e.unsent) AS has_next
"""


async def mark_sent_many(conn: asyncpg.Connection, sent: Sequence[Accepted]) -> bool:
    """``mark_sent`` for many answers at once: one statement, and no transaction, in the common
    case (every row is marked by it and is committed when it returns).

    The rows it leaves (status callbacks came before the answer; a second wamid for one
    notification; one notification twice in ``sent``) are stored one at a time by ``mark_sent``,
    in one transaction. Returns whether a message may have become due by it (the next message of
    a stored one's recipient, or a free text re-armed as a template).
    """
    if not sent:
        return False
    if len({a.notification_id for a in sent}) < len(sent):
        # one notification twice (claimed again while its first answer waited for the
        # database): one at a time, so the second is reported as the duplicate it is
        left: Sequence[Accepted] = sent
        due = False
    else:
        ordered = sorted(sent, key=lambda a: a.notification_id)  # one lock order
        notes = await conn.fetch(
            _MARK_SENT_MANY,
            [a.notification_id for a in ordered],
            [a.wamid for a in ordered],
            [a.kind for a in ordered],
            [a.template for a in ordered],
            [a.body for a in ordered],
        )
        due = any(note["has_next"] for note in notes)
        stored = {note["id"] for note in notes}
        left = [a for a in ordered if a.notification_id not in stored]
    if left:
        async with conn.transaction():
            for a in left:
                await mark_sent(conn, a.notification_id, a.wamid, kind=a.kind,
                                template=a.template, body=a.body)
        due = True  # a fold may have re-armed a text, a successor may be due: let the sender look
    return due


async def record_statuses(conn: asyncpg.Connection, statuses: Sequence[MessageStatus]) -> int:
    """Apply status callbacks, tolerant of repeats and of any order; return how many messages
    must be sent again (free text refused outside the window: sent again as a template)."""
    rearmed = 0
    for status in sorted(statuses, key=lambda s: (s.id, s.timestamp)):  # one lock order
        fresh = await conn.fetchval(
            "INSERT INTO whatsapp_statuses (wamid, status, occurred_at, callback_data, errors)"
            " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING RETURNING true",
            status.id, status.status, status.timestamp, status.callback_data,
            json.dumps([e.__dict__ for e in status.errors]),
        )
        if not fresh:
            continue  # a repeat
        note = await conn.fetchrow(
            f"SELECT {_NOTE_COLUMNS} FROM notifications WHERE wamid = $1 FOR UPDATE", status.id
        )
        if note is None:
            note = await _confirm_by_reference(conn, status)
        if note is not None:
            rearmed += await _fold_statuses(conn, note)
    return rearmed


async def _confirm_by_reference(
    conn: asyncpg.Connection, status: MessageStatus
) -> asyncpg.Record | None:
    """A callback for a message we never got an answer for: it was accepted, so it is sent."""
    ref = parse_callback_ref(status.callback_data)
    if ref is None:
        return None  # not one of notify's messages (e.g. intake's replies on the same number)
    note = await conn.fetchrow(
        f"SELECT {_NOTE_COLUMNS} FROM notifications WHERE event_id = $1 AND recipient = $2"
        " FOR UPDATE",
        *ref,
    )
    if note is None:
        return None
    failed = await conn.fetchval(
        "SELECT true FROM whatsapp_statuses WHERE wamid = $1 AND status = 'failed'", status.id
    )
    if note["wamid"] is None and not failed:
        log.info("send confirmed by a status callback", request_id=str(note["request_id"]),
                 wamid=status.id)
        await mark_sent(conn, note["id"], status.id)
    elif note["wamid"] != status.id and status.status == "sent":
        log.error("a second message was accepted for one notification (the duplicate window)",
                  request_id=str(note["request_id"]), wamid=status.id, first_wamid=note["wamid"])
    return None  # mark_sent folded the statuses; a stray wamid is not the notification's


async def _fold_statuses(conn: asyncpg.Connection, note: asyncpg.Record) -> int:
    """Bring the notification's ``wa_status`` up to date with every callback of its wamid."""
    rows = await conn.fetch(
        "SELECT status, occurred_at, errors FROM whatsapp_statuses WHERE wamid = $1"
        " ORDER BY occurred_at",
        note["wamid"],
    )
    state, at, error = note["wa_status"], note["wa_status_at"], note["wa_error"]
    codes: set[int] = set()
    for row in rows:
        new = advance_wa_status(state, row["status"])
        if new != state:
            state, at = new, row["occurred_at"]
            if new == "failed":
                errors = [StatusError(**e) for e in json.loads(row["errors"])]
                codes = {e.code for e in errors if e.code is not None}
                error = "; ".join(_describe(e) for e in errors) or "failed"
    if state == note["wa_status"]:
        return 0
    if state == "failed" and note["kind"] == "text" and RE_ENGAGEMENT_ERROR in codes:
        # The 24-hour window closed before the free text reached the phone: send the template.
        # Not if erased (retention.py): a callback that late has nobody left to send it to.
        rearmed = await conn.fetchval(
            "UPDATE notifications SET status = 'pending', force_template = true, wamid = NULL,"
            " wa_status = NULL, wa_status_at = NULL, wa_error = NULL, next_attempt_at = now(),"
            " error = $2 WHERE id = $1 AND personal_data_erased_at IS NULL RETURNING true",
            note["id"], f"free text refused ({error}): sending the template",
        )
        if rearmed:
            return 1
    await conn.execute(
        "UPDATE notifications SET wa_status = $2, wa_status_at = $3,"
        " wa_error = CASE WHEN personal_data_erased_at IS NULL THEN $4 END WHERE id = $1",
        note["id"], state, at, error,
    )
    return 0


def _describe(error: StatusError) -> str:
    text = error.title or error.message or "error"
    if error.details:
        text += f": {error.details}"
    return f"{text} (code {error.code})" if error.code is not None else text


async def record_inbound(conn: asyncpg.Connection, messages: Iterable[InboundMessage]) -> None:
    """The applicant wrote to us: the 24-hour window runs from their latest message."""
    latest: dict[str, Any] = {}
    for message in messages:
        if message.wa_id not in latest or message.timestamp > latest[message.wa_id]:
            latest[message.wa_id] = message.timestamp
    for wa_id in sorted(latest):
        await conn.execute(
            "INSERT INTO conversations (wa_id, last_inbound_at) VALUES ($1, $2)"
            " ON CONFLICT (wa_id) DO UPDATE SET last_inbound_at ="
            " GREATEST(conversations.last_inbound_at, EXCLUDED.last_inbound_at)",
            wa_id, latest[wa_id],
        )


async def retry_failed(conn: asyncpg.Connection, notification_id: int) -> bool:
    """Ops: send a failed notification again now. False if it is not failed, or erased
    (retention.py: its recipient and text are gone)."""
    done = await conn.fetchval(
        "UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = now(),"
        " error = NULL, claim_token = NULL, claimed_until = NULL"
        " WHERE id = $1 AND status = 'failed' AND personal_data_erased_at IS NULL RETURNING true",
        notification_id,
    )
    return bool(done)
