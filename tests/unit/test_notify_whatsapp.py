"""Notify's side of the Cloud API: the message's reference, ambiguous failures, the webhook."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from services.notify import webhooks
from services.notify.settings import NotifySettings
from shared.webhook_signing import META_SIGNATURE_HEADER, sign_meta
from shared.whatsapp.client import (
    WhatsAppClient,
    WhatsAppError,
    parse_inbound_messages,
    parse_status_callback,
    subscription_challenge,
    template_body,
    text_body,
)

PHONE = "+6281234567890"


def test_the_reference_travels_with_the_message() -> None:
    body = template_body(PHONE, "ketanmu_dicetak", ["Siti"], callback_data="e1/applicant")
    assert body["biz_opaque_callback_data"] == "e1/applicant"
    assert text_body(PHONE, "Halo", callback_data="e1/delivery")["biz_opaque_callback_data"] == (
        "e1/delivery"
    )
    assert "biz_opaque_callback_data" not in text_body(PHONE, "Halo")


def _raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    return handle


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        (httpx.ConnectError("refused"), False),  # never left: resend at once
        (httpx.ConnectTimeout("slow"), False),
        (httpx.PoolTimeout("busy"), False),
        (httpx.ReadTimeout("no answer"), True),  # left, no answer: maybe accepted
        (httpx.RemoteProtocolError("dropped"), True),
        (httpx.ReadError("reset"), True),
    ],
)
async def test_only_a_lost_answer_is_ambiguous(exc: Exception, ambiguous: bool) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_raising(exc))) as http:
        with pytest.raises(WhatsAppError) as caught:
            await WhatsAppClient(http, "http://graph.test", "1", "t").send_text(PHONE, "x")
    assert caught.value.transient and caught.value.ambiguous is ambiguous


def _value(**value: object) -> dict[str, object]:
    return {"entry": [{"changes": [{"field": "messages", "value": {
        "metadata": {"phone_number_id": "100000000000001"}, **value}}]}]}


def test_status_callbacks_carry_the_reference() -> None:
    [status] = parse_status_callback(_value(statuses=[{
        "id": "wamid.A", "status": "sent", "timestamp": "1763776800",
        "recipient_id": "6281234567890", "biz_opaque_callback_data": "e1/applicant"}]))
    assert status.callback_data == "e1/applicant"


def test_inbound_messages_give_who_wrote_and_when() -> None:
    payload = _value(messages=[
        {"from": "6281234567890", "id": "wamid.IN1", "timestamp": "1763776800", "type": "text",
         "text": {"body": "Halo"}},
        {"from": "6281234567890", "id": "wamid.IN2", "type": "text"},  # no time: skipped
        "junk",
    ], statuses=[{"id": "wamid.A", "status": "read", "timestamp": "1",
                  "recipient_id": "6281234567890"}])
    [message] = parse_inbound_messages(payload)
    assert message.wa_id == "6281234567890" and message.id == "wamid.IN1"
    assert message.timestamp == datetime.fromtimestamp(1763776800, UTC)
    assert message.type == "text" and message.phone_number_id == "100000000000001"
    assert parse_inbound_messages({}) == []


def test_subscription_challenge() -> None:
    ok = {"hub.mode": "subscribe", "hub.verify_token": "tok", "hub.challenge": "123"}
    assert subscription_challenge(ok, "tok") == "123"
    assert subscription_challenge({**ok, "hub.verify_token": "other"}, "tok") is None
    assert subscription_challenge({**ok, "hub.mode": "unsubscribe"}, "tok") is None


@pytest.fixture
async def webhook() -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(webhooks.router)
    app.state.rt = SimpleNamespace(settings=NotifySettings())  # no database: refused before it
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://notify.test")


async def test_the_webhook_answers_meta_verification(webhook: httpx.AsyncClient) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": NotifySettings().whatsapp_verify_token,
              "hub.challenge": "1158201444"}
    answer = await webhook.get("/webhooks/whatsapp", params=params)
    assert answer.status_code == 200 and answer.text == "1158201444"
    params["hub.verify_token"] = "guess"
    assert (await webhook.get("/webhooks/whatsapp", params=params)).status_code == 403


async def test_the_webhook_refuses_what_meta_did_not_sign(webhook: httpx.AsyncClient) -> None:
    raw = json.dumps(_value(statuses=[])).encode()
    for signature in (None, "sha256=00", sign_meta("another-app-secret", raw)):
        headers = {META_SIGNATURE_HEADER: signature} if signature else {}
        answer = await webhook.post("/webhooks/whatsapp", content=raw, headers=headers)
        assert answer.status_code == 401
    signed = {META_SIGNATURE_HEADER: sign_meta(NotifySettings().whatsapp_app_secret, b"{")}
    assert (await webhook.post("/webhooks/whatsapp", content=b"{", headers=signed)).status_code == 400
