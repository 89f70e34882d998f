"""WhatsApp Cloud API client against the in-process sandbox, and its error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from sandbox.settings import SandboxSettings
from sandbox.testing import SANDBOX_BASE_URL, in_process_sandbox
from shared.whatsapp.client import (
    WhatsAppClient,
    WhatsAppError,
    parse_status_callback,
    template_body,
    wa_recipient,
)

S = SandboxSettings(autoplay=False, seed=3)
WA_URL = f"{SANDBOX_BASE_URL}/whatsapp"
PHONE = "+6281234567890"


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with in_process_sandbox(S) as pair:
        yield pair


def wa(client: httpx.AsyncClient, **kw: str) -> WhatsAppClient:
    args = {"phone_number_id": S.whatsapp_phone_number_id, "access_token": S.whatsapp_access_token}
    args |= kw
    return WhatsAppClient(client, WA_URL, **args)


async def test_send_template_is_recorded(sandbox: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = sandbox
    wamid = await wa(client).send_template(
        PHONE, "dokumen_siap_dikirim", ["Siti Aminah", "KTP-el", "Rp 20.000"]
    )
    assert wamid.startswith("wamid.")
    answer = (await client.get("/sandbox/whatsapp/messages", params={"to": PHONE})).json()
    assert answer["count"] == 1
    [message] = answer["messages"]
    assert message["id"] == wamid
    assert message["wa_id"] == "6281234567890" and message["to"] == "6281234567890"
    assert message["template"] == "dokumen_siap_dikirim" and message["language"] == "id"
    assert message["params"] == ["Siti Aminah", "KTP-el", "Rp 20.000"]
    assert message["received_at"].endswith("Z")


async def test_send_text_and_since_filter(sandbox: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = sandbox
    await wa(client).send_text(PHONE, "Halo")
    cut = datetime.now(UTC).timestamp()
    await wa(client).send_text("081234567890", "Dokumen Anda sudah dikirim")
    everything = (await client.get("/sandbox/whatsapp/messages")).json()
    later = (await client.get("/sandbox/whatsapp/messages", params={"since": cut})).json()
    assert everything["count"] == 2
    assert [m["text"] for m in later["messages"]] == ["Dokumen Anda sudah dikirim"]
    assert later["messages"][0]["wa_id"] == "6281234567890"  # 08... became 628...
    by_iso = datetime.fromtimestamp(cut, UTC).isoformat()
    assert (await client.get("/sandbox/whatsapp/messages", params={"since": by_iso})).json()[
        "count"
    ] == 1


@pytest.mark.parametrize(
    ("kw", "status", "code"),
    [
        ({"access_token": "expired"}, 401, "190"),
        ({"phone_number_id": "999"}, 400, "100"),
    ],
)
async def test_refusals_are_permanent(
    sandbox: tuple[FastAPI, httpx.AsyncClient], kw: dict[str, str], status: int, code: str
) -> None:
    _, client = sandbox
    with pytest.raises(WhatsAppError) as caught:
        await wa(client, **kw).send_template(PHONE, "t", ["x"])
    assert not caught.value.transient
    assert caught.value.status == status
    assert f"code {code}" in caught.value.reason


async def test_template_param_with_new_line_is_refused_like_meta(
    sandbox: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    with pytest.raises(WhatsAppError) as caught:
        await wa(client).send_template(PHONE, "t", ["Jl. Raya\nJabon"])
    assert not caught.value.transient and "132018" in caught.value.reason
    assert (await client.get("/sandbox/whatsapp/messages")).json()["count"] == 0


async def test_sandbox_refuses_bad_bodies_meta_style(
    sandbox: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    url = f"/whatsapp/v21.0/{S.whatsapp_phone_number_id}/messages"
    auth = {"Authorization": f"Bearer {S.whatsapp_access_token}"}
    bad_bodies = [
        {"to": "628123", "type": "text", "text": {"body": "hi"}},
        {"messaging_product": "whatsapp", "type": "text", "text": {"body": "hi"}},
        {"messaging_product": "whatsapp", "to": "628123", "type": "text", "text": {}},
        {"messaging_product": "whatsapp", "to": "628123", "type": "template", "template": {}},
        {"messaging_product": "whatsapp", "to": "628123", "type": "sticker"},
    ]
    for body in bad_bodies:
        answer = await client.post(url, json=body, headers=auth)
        assert answer.status_code == 400, body
        error = answer.json()["error"]
        assert {"message", "type", "code", "fbtrace_id"} <= set(error)
    not_json = await client.post(url, content=b"{", headers=auth)
    assert not_json.status_code == 400
    assert (await client.get("/sandbox/whatsapp/messages")).json()["count"] == 0


async def test_outage_is_transient(sandbox: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = sandbox
    await client.post("/sandbox/faults", json={"target": "whatsapp", "mode": "error"})
    with pytest.raises(WhatsAppError) as caught:
        await wa(client).send_text(PHONE, "Halo")
    assert caught.value.transient and caught.value.status == 503


def handler_for(
    status: int | None = None, json: object = None, exc: Exception | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        if exc is not None:
            raise exc
        return httpx.Response(status or 200, json=json)

    return handle


def meta_error(code: int, message: str = "boom") -> dict[str, object]:
    return {"error": {"message": message, "type": "OAuthException", "code": code}}


@pytest.mark.parametrize(
    ("handler", "transient", "status"),
    [
        (handler_for(429, meta_error(130429, "Rate limit hit")), True, 429),
        (handler_for(500, meta_error(1)), True, 500),
        (handler_for(400, meta_error(131056, "pair rate limit")), True, 400),
        (handler_for(400, meta_error(131026, "Message undeliverable")), False, 400),
        (handler_for(400, meta_error(132001, "Template does not exist")), False, 400),
        (handler_for(exc=httpx.ReadTimeout("slow")), True, None),
        (handler_for(exc=httpx.ConnectError("refused")), True, None),
        (handler_for(200, {"messaging_product": "whatsapp"}), False, 200),
    ],
)
async def test_error_mapping(
    handler: Callable[[httpx.Request], httpx.Response], transient: bool, status: int | None
) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = WhatsAppClient(http, "http://graph.test", "1", "token")
        with pytest.raises(WhatsAppError) as caught:
            await client.send_template(PHONE, "t", ["x"])
    assert caught.value.transient is transient
    assert caught.value.status == status


async def test_request_shape_and_auth() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"messages": [{"id": "wamid.X"}]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        client = WhatsAppClient(http, "http://graph.test/", "12345", "tok", api_version="v22.0")
        assert await client.send_template(PHONE, "t", ["a"]) == "wamid.X"
    [request] = seen
    assert str(request.url) == "http://graph.test/v22.0/12345/messages"
    assert request.headers["authorization"] == "Bearer tok"
    assert request.extensions["timeout"]["read"] == 10.0


def test_template_body_matches_the_cloud_api() -> None:
    assert template_body(PHONE, "siap", ["A"], "id") == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "6281234567890",
        "type": "template",
        "template": {
            "name": "siap",
            "language": {"code": "id"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "A"}]}],
        },
    }
    assert "components" not in template_body(PHONE, "siap", [])["template"]


async def test_invalid_phone_fails_before_sending() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler_for(500))) as http:
        with pytest.raises(WhatsAppError) as caught:
            await WhatsAppClient(http, "http://graph.test", "1", "t").send_text("halo", "x")
    assert not caught.value.transient and caught.value.status is None
    assert wa_recipient("+62 812-3456-7890") == "6281234567890"


def test_parse_status_callback() -> None:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"phone_number_id": "100000000000001"},
                            "statuses": [
                                {
                                    "id": "wamid.A",
                                    "status": "delivered",
                                    "timestamp": "1763776800",
                                    "recipient_id": "6281234567890",
                                },
                                {
                                    "id": "wamid.B",
                                    "status": "failed",
                                    "timestamp": "1763776801",
                                    "recipient_id": "6281234567890",
                                    "errors": [
                                        {
                                            "code": 131047,
                                            "title": "Re-engagement message",
                                            "message": "Re-engagement message",
                                            "error_data": {"details": "more than 24 hours"},
                                        }
                                    ],
                                },
                                {"id": "wamid.C", "status": "deleted", "timestamp": "1"},
                                {"status": "read"},
                            ],
                        },
                    },
                    {"field": "messages", "value": {"messages": [{"id": "wamid.IN"}]}},
                ],
            }
        ],
    }
    delivered, failed = parse_status_callback(payload)
    assert delivered.id == "wamid.A" and delivered.status == "delivered"
    assert delivered.timestamp == datetime.fromtimestamp(1763776800, UTC)
    assert delivered.phone_number_id == "100000000000001" and delivered.errors == ()
    assert failed.status == "failed" and failed.errors[0].code == 131047
    assert failed.errors[0].details == "more than 24 hours"
    assert parse_status_callback({}) == []
