"""The WhatsApp webhook as notify reads it: status callbacks and when applicants last wrote.

Meta sends every change of the app (inbound messages and statuses alike) to one callback URL; the
edge gives notify and intake each a copy (services/notify/README.md). Notify takes the
``statuses`` (the fate of its messages) and the time of each inbound message (the 24-hour window);
the conversations themselves are intake's. Verified on the raw body (``X-Hub-Signature-256``),
applied in one transaction, answered 200; a database outage answers 503 so Meta retries.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from shared.db.pool import TRANSIENT_DB_ERRORS
from shared.http import problem_response
from shared.logging import get_logger
from shared.webhook_signing import META_SIGNATURE_HEADER, verify_meta_signature
from shared.whatsapp.client import (
    parse_inbound_messages,
    parse_status_callback,
    subscription_challenge,
)

from .repository import record_inbound, record_statuses

log = get_logger(__name__)
router = APIRouter(tags=["WhatsApp webhook"])

MAX_BODY_BYTES = 1_000_000


@router.get("/webhooks/whatsapp")
async def verify_subscription(request: Request) -> Any:
    challenge = subscription_challenge(
        request.query_params, request.app.state.rt.settings.whatsapp_verify_token
    )
    if challenge is None:
        return problem_response(403, "Verification token mismatch")
    return PlainTextResponse(challenge)


@router.post("/webhooks/whatsapp")
async def whatsapp_callback(request: Request) -> Any:
    rt = request.app.state.rt
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return problem_response(413, f"Body larger than {MAX_BODY_BYTES} bytes")
    if not verify_meta_signature(
        rt.settings.whatsapp_app_secret, raw, request.headers.get(META_SIGNATURE_HEADER)
    ):
        log.warning("whatsapp callback with a bad signature refused")
        return problem_response(401, "Invalid signature", f"{META_SIGNATURE_HEADER} does not match")
    try:
        payload = json.loads(raw)
    except ValueError:
        return problem_response(400, "Body is not JSON")
    if not isinstance(payload, dict):
        return problem_response(400, "Body is not a JSON object")
    statuses = parse_status_callback(payload)
    inbound = parse_inbound_messages(payload)
    try:
        async with rt.pool.acquire() as conn, conn.transaction():
            await record_inbound(conn, inbound)
            rearmed = await record_statuses(conn, statuses)
    except TRANSIENT_DB_ERRORS as exc:
        log.warning("whatsapp callback not stored, Meta will retry", error=repr(exc))
        return problem_response(503, "Temporarily unavailable", headers={"Retry-After": "5"})
    if rearmed or statuses:
        rt.waker("sender").set()
    return {"status": "ok", "statuses": len(statuses), "messages": len(inbound)}
