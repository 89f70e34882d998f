"""The WhatsApp Cloud API webhook: verification, signed inbound messages, the conversation.

``GET /webhooks/whatsapp`` echoes ``hub.challenge`` when ``hub.verify_token`` matches.
``POST /webhooks/whatsapp`` checks ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with the
app secret) and handles each message in its own transaction: its wamid is recorded first (a
redelivered message is skipped), the sender's conversation row is locked, the pure
``conversation.step`` decides, registration or status lookup happen, the new state and the
replies are stored, and the reply loop (``replies.py``) sends them. Meta gets its 200 once the
messages are stored, without waiting for the replies to go out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError

from shared.db.pool import TRANSIENT_DB_ERRORS
from shared.http import Problem
from shared.logging import get_logger
from shared.outbox import wake_relay
from shared.runtime import Runtime
from shared.webhook_signing import META_SIGNATURE_HEADER, verify_meta_signature
from shared.whatsapp.client import parse_inbound_messages, subscription_challenge

from . import conversation as conv
from . import ratelimit, registration, repository
from .domain import STATUS_LABELS
from .inputs import RegistrationIn
from .ratelimit import Limit
from .registration import Caller, DailyQuotaFull, OpenRequestExists
from .replies import WAKER, queue_reply
from .settings import IntakeSettings
from .shedding import busy_retry_after
from .tracking import public_view
from .validation import InvalidPhone, normalize_phone

log = get_logger(__name__)
router = APIRouter(tags=["whatsapp"])

# What Meta sends; anything else is not from Meta and is skipped before it reaches the database.
_WAMID = re.compile(r"^[\x21-\x7e]{1,200}$")
_WA_ID = re.compile(r"^[0-9]{6,20}$")
NOT_INDONESIAN = "Maaf, layanan ini hanya untuk nomor WhatsApp Indonesia (+62)."
SORRY = "Maaf, pesan Anda belum bisa kami proses. Coba lagi, atau balas BANTUAN."


@dataclass(frozen=True)
class Inbound:
    wamid: str
    wa_id: str  # the sender, digits with country code
    text: str | None  # None: not a text (image, sticker, location...)


def _text_of(message: Mapping[str, Any]) -> str | None:
    kind = message.get("type")
    if kind == "text":
        body = (message.get("text") or {}).get("body")
        return body if isinstance(body, str) else None
    if kind == "button":  # a quick-reply button of a template
        text = (message.get("button") or {}).get("text")
        return text if isinstance(text, str) else None
    if kind == "interactive":
        interactive = message.get("interactive") or {}
        reply = interactive.get("button_reply") or interactive.get("list_reply") or {}
        title = reply.get("title") if isinstance(reply, dict) else None
        return title if isinstance(title, str) else None
    return None


def _raw_messages(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    values = [c.get("value") for e in payload.get("entry") or [] if isinstance(e, dict)
              for c in e.get("changes") or [] if isinstance(c, dict)]  # fmt: skip
    return [m for v in values if isinstance(v, dict) for m in v.get("messages") or []
            if isinstance(m, dict)]  # fmt: skip


def inbound_messages(payload: Mapping[str, Any], phone_number_id: str) -> list[Inbound]:
    """Every message sent to our number, with its text (pure).

    Statuses of our own replies (``value.statuses``, notify's business) and entries that cannot
    be read are skipped: Meta adds kinds without notice, and a retry would not make them readable.
    """
    texts = {m.get("id"): _text_of(m) for m in _raw_messages(payload)}
    return [
        Inbound(m.id, m.wa_id, texts.get(m.id))
        for m in parse_inbound_messages(payload)
        if m.phone_number_id in (None, phone_number_id) and _WAMID.match(m.id)
        and _WA_ID.match(m.wa_id)
    ]


@router.get("/webhooks/whatsapp", response_class=PlainTextResponse)
async def verify_subscription(
    request: Request,
    mode: Annotated[str, Query(alias="hub.mode", max_length=40)] = "",
    token: Annotated[str, Query(alias="hub.verify_token", max_length=200)] = "",
    challenge: Annotated[str, Query(alias="hub.challenge", max_length=200)] = "",
) -> PlainTextResponse:
    s: IntakeSettings = request.app.state.rt.settings
    params = {"hub.mode": mode, "hub.verify_token": token, "hub.challenge": challenge}
    echo = subscription_challenge(params, s.whatsapp_verify_token)
    # Meta's challenge is a number; echoing anything else would make this a reflection point.
    if echo and echo.isascii() and echo.isalnum():
        return PlainTextResponse(echo)
    raise Problem(403, "Verifikasi webhook gagal / Webhook verification failed",
                  "hub.mode, hub.verify_token atau hub.challenge salah"
                  " / wrong hub.mode, hub.verify_token or hub.challenge")  # fmt: skip


@router.post("/webhooks/whatsapp")
async def receive(request: Request) -> Any:
    rt: Runtime = request.app.state.rt
    s: IntakeSettings = rt.settings  # type: ignore[assignment]
    raw = await request.body()
    if not verify_meta_signature(
        s.whatsapp_app_secret, raw, request.headers.get(META_SIGNATURE_HEADER)
    ):
        raise Problem(401, "Tanda tangan tidak sah / Invalid signature",
                      f"{META_SIGNATURE_HEADER} tidak cocok dengan body"
                      f" / {META_SIGNATURE_HEADER} does not match the body")  # fmt: skip
    try:
        payload = json.loads(raw)
    except ValueError:
        raise Problem(400, "Body bukan JSON yang sah / Body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise Problem(400, "Body harus objek JSON / Body must be a JSON object")
    handled = duplicates = 0
    for message in inbound_messages(payload, s.whatsapp_phone_number_id):
        try:
            fresh = await handle_message(rt, message)
        except TRANSIENT_DB_ERRORS as exc:
            # not stored: Meta redelivers the payload, the messages already done are skipped
            log.warning("whatsapp message not handled, Meta will retry", error=repr(exc))
            raise Problem(503, "Sedang tidak tersedia / Temporarily unavailable",
                          headers={"Retry-After": "5"}) from None  # fmt: skip
        except Exception:  # a message that can never succeed must not come back for days
            log.exception("whatsapp message failed", wamid=message.wamid)
            fresh = await _give_up(rt, message)
        handled += fresh
        duplicates += not fresh
    if handled:
        rt.waker(WAKER).set()
    return {"handled": handled, "duplicates": duplicates}


async def _give_up(rt: Runtime, message: Inbound) -> bool:
    """Record a message that broke its handler as handled, and apologise: Meta would otherwise
    redeliver it for days, and it would fail the same way each time."""
    async with rt.pool.acquire() as conn, conn.transaction():
        fresh = await _mark_handled(conn, message.wamid)
        if fresh:
            await queue_reply(conn, message.wa_id, SORRY)
    return fresh


async def _mark_handled(conn: asyncpg.Connection, wamid: str) -> bool:
    return bool(await conn.fetchval(
        "INSERT INTO wa_inbound (wamid) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", wamid
    ))  # fmt: skip


async def handle_message(rt: Runtime, message: Inbound) -> bool:
    """Apply one inbound message; False if it was already handled (a redelivery)."""
    s: IntakeSettings = rt.settings  # type: ignore[assignment]
    async with rt.pool.acquire() as conn, conn.transaction():
        if not await _mark_handled(conn, message.wamid):
            log.info("whatsapp message already handled", wamid=message.wamid)
            return False
        try:
            phone = normalize_phone("+" + message.wa_id)
        except InvalidPhone:
            await queue_reply(conn, message.wa_id, NOT_INDONESIAN)
            return True
        current = await _load(conn, message.wa_id)
        step = conv.step(current, message.text, cod_fee=s.cod_fee_rupiah)
        replies = list(step.replies)
        action = step.action
        if isinstance(action, conv.LookupStatus):
            replies.append(await _status(conn, s, message.wa_id, phone, action.tracking_code))
        elif isinstance(action, conv.Register):
            step = await _register(conn, rt, step.conversation, action, phone, message.wamid)
            replies.extend(step.replies)
        await _save(conn, message.wa_id, step.conversation)
        for reply in replies:
            await queue_reply(conn, message.wa_id, reply)
    if isinstance(action, conv.Register):
        wake_relay(rt.schema)  # its request-registered event, if it was registered, is committed
    # the sender's number is masked by the log pipeline (shared/logging.py), like every value
    log.info("whatsapp message handled", wamid=message.wamid, sender=message.wa_id,
             state=step.conversation.state,
             action=type(step.action).__name__ if step.action else None)  # fmt: skip
    return True


async def _load(conn: asyncpg.Connection, wa_id: str) -> conv.Conversation:
    await conn.execute("INSERT INTO wa_conversations (wa_id) VALUES ($1) ON CONFLICT DO NOTHING", wa_id)
    row = await conn.fetchrow(
        "SELECT state, draft FROM wa_conversations WHERE wa_id = $1 FOR UPDATE", wa_id
    )
    return conv.Conversation(row["state"], json.loads(row["draft"]))


async def _save(conn: asyncpg.Connection, wa_id: str, state: conv.Conversation) -> None:
    await conn.execute(
        "UPDATE wa_conversations SET state = $2, draft = $3::jsonb, updated_at = now()"
        " WHERE wa_id = $1",
        wa_id,
        state.state,
        json.dumps(dict(state.draft)),
    )


async def _register(
    conn: asyncpg.Connection, rt: Runtime, at_confirm: conv.Conversation, action: conv.Register,
    phone: str, wamid: str,
) -> conv.Step:  # fmt: skip
    s: IntakeSettings = rt.settings  # type: ignore[assignment]
    try:
        body = RegistrationIn.model_validate(conv.registration_body(action.draft, phone))
    except ValidationError as exc:
        # every field was checked when typed; only a rule changed since could get here
        log.warning("whatsapp draft no longer valid", errors=[e["type"] for e in exc.errors()])
        again = "Maaf, data belum lengkap. Balas DAFTAR untuk mengisi ulang."
        return conv.Step(conv.Conversation(), (again,))
    caller = Caller(channel="whatsapp", intake_via="whatsapp", causation_id=wamid)
    doc = body.document_type.value
    if (wait := busy_retry_after(rt)) is not None:
        # Meta still gets its 200 (a 429 would only make it redeliver); the applicant is told
        log.info("whatsapp registration deferred: load shedding", retry_after_s=wait)
        return conv.refused_busy(at_confirm, doc)
    try:
        done = await registration.register(
            conn, settings=s, schema=rt.schema, body=body, caller=caller, phone_override=phone
        )
    except OpenRequestExists as refused:
        code = refused.tracking_code if refused.same_phone else None
        return conv.refused_open(doc, code, STATUS_LABELS.get(refused.status, refused.status))
    except DailyQuotaFull as refused:
        return conv.refused_quota(at_confirm, doc, refused.next_day)
    log.info("request registered", request_id=str(done.request_id), intake_via="whatsapp",
             document_type=doc, correlation_id=str(done.request_id))  # fmt: skip
    url = f"{s.public_base_url.rstrip('/')}/lacak?kode={done.tracking_code}"
    return conv.registered(done.tracking_code, doc, done.partner, done.cod_fee, url)


async def _status(
    conn: asyncpg.Connection, s: IntakeSettings, wa_id: str, phone: str, code: str
) -> str:
    """STATUS <code>: only for requests of the sender's own number; guesses are limited."""
    now, window = datetime.now(UTC), s.tracking_window_s
    limit = Limit(f"wa-status-fail:{wa_id}", s.tracking_max_failures_per_client)
    if await ratelimit.exceeded(conn, [limit], window, now):
        minutes = max(1, ratelimit.seconds_left(now, window) // 60)
        return f"Terlalu banyak percobaan kode lacak. Coba lagi dalam {minutes} menit."
    row = await repository.find_by_tracking_code(conn, code)
    owned = row is not None and (
        row["applicant_phone"] == phone
        if row["applicant_phone"] is not None
        else row["phone_last4"] == phone[-4:]
    )
    if row is None or not owned:
        await ratelimit.hit(conn, limit.bucket, window, now)
        return conv.status_reply(code, None)
    events = await repository.timeline(conn, row["request_id"])
    return conv.status_reply(code, public_view(row, events, s))
