"""Steps the e2e tests share: register, print, wait, and look at what the outside world saw."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from deploy.local.demo import mark_printed, operator_headers, sample_request
from deploy.local.system import System


async def register(http: httpx.AsyncClient, system: System, body: dict[str, Any],
                   request_id_header: str | None = None, retries: int = 60) -> dict[str, Any]:
    """Register with an Idempotency-Key, retrying while intake is down (as a client would)."""
    headers = {"Idempotency-Key": f"e2e-{random.getrandbits(64):x}"}
    if request_id_header:
        headers["X-Request-ID"] = request_id_header
    for _ in range(retries):
        try:
            r = await http.post(f"{system.url('intake')}/requests", json=body, headers=headers)
        except httpx.TransportError:
            await asyncio.sleep(0.5)
            continue
        if r.status_code in (200, 201):
            return dict(r.json())
        if r.status_code < 500:
            raise AssertionError(f"registration refused: {r.status_code} {r.text}")
        await asyncio.sleep(0.5)
    raise AssertionError("intake did not accept the registration")


async def print_request(http: httpx.AsyncClient, system: System, request_id: str) -> None:
    for _ in range(120):
        try:
            await mark_printed(http, system.url("printing"), request_id, "operator-e2e")
            return
        except (httpx.TransportError, RuntimeError):
            await asyncio.sleep(0.5)
    raise AssertionError(f"could not print {request_id}")


async def status_of(http: httpx.AsyncClient, system: System, request_id: str) -> dict[str, Any]:
    url = f"{system.url('intake')}/requests/{request_id}"
    return dict((await http.get(url, headers=operator_headers())).json())


async def wait_delivered(http: httpx.AsyncClient, system: System, ids: list[str],
                         timeout_s: float = 90.0) -> dict[str, dict[str, Any]]:
    """Every request delivered with COD paid, or an AssertionError naming the stragglers."""
    deadline = time.monotonic() + timeout_s
    done: dict[str, dict[str, Any]] = {}
    while True:
        for rid in [i for i in ids if i not in done]:
            try:
                body = await status_of(http, system, rid)
            except httpx.TransportError:
                continue
            if body.get("status") == "delivered" and body.get("cod_paid"):
                done[rid] = body
        if len(done) == len(ids):
            return done
        if time.monotonic() > deadline:
            missing = {rid: (await status_of(http, system, rid)).get("status")
                       for rid in ids if rid not in done}
            raise AssertionError(f"{len(missing)} requests not delivered: {missing}")
        await asyncio.sleep(0.5)


async def whatsapp_messages(http: httpx.AsyncClient, system: System, phone: str) -> list[dict[str, Any]]:
    to = phone.lstrip("+")
    r = await http.get(f"{system.url('sandbox')}/sandbox/whatsapp/messages", params={"to": to})
    return list(r.json()["messages"])


async def wait_notifications_sent(http: httpx.AsyncClient, system: System, request_id: str,
                                  expected: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = await http.get(f"{system.url('notify')}/notifications", params={"request_id": request_id})
            sent = [n for n in r.json()["notifications"] if n["status"] == "sent"]
            if len(sent) >= expected:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"notifications for {request_id} not all sent")
        await asyncio.sleep(0.3)


def applicant_body(rng: random.Random, partner: str | None = None) -> dict[str, Any]:
    return sample_request(rng, partner)


# ---- WhatsApp applicant (intake's conversation) -------------------------------------------

WA_APP_SECRET = "wa-dev-app-secret"  # intake's default WHATSAPP_APP_SECRET


def wa_text_message(wa_id: str, text: str, wamid: str | None = None) -> dict[str, Any]:
    """The Cloud API webhook body of one text message from ``wa_id`` to our number."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "ketanmu-waba", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "6281100000000",
                         "phone_number_id": "100000000000001"},
            "contacts": [{"profile": {"name": "Pemohon"}, "wa_id": wa_id}],
            "messages": [{"from": wa_id, "id": wamid or f"wamid.e2e{random.getrandbits(64):x}",
                          "timestamp": str(int(time.time())), "type": "text",
                          "text": {"body": text}}],
        }}]}],
    }  # fmt: skip


async def wa_send(http: httpx.AsyncClient, system: System, wa_id: str, text: str,
                  wamid: str | None = None, retries: int = 60) -> dict[str, Any]:
    """POST one signed message to intake's webhook, retrying while intake is down (as Meta does)."""
    import json

    from shared.webhook_signing import sign_meta

    raw = json.dumps(wa_text_message(wa_id, text, wamid)).encode()
    headers = {"content-type": "application/json",
               "X-Hub-Signature-256": sign_meta(WA_APP_SECRET, raw)}
    for _ in range(retries):
        try:
            r = await http.post(f"{system.url('intake')}/webhooks/whatsapp", content=raw,
                                headers=headers)
        except httpx.TransportError:
            await asyncio.sleep(0.5)
            continue
        if r.status_code == 200:
            return dict(r.json())
        raise AssertionError(f"webhook refused: {r.status_code} {r.text}")
    raise AssertionError("intake did not accept the webhook")


async def wa_texts(http: httpx.AsyncClient, system: System, wa_id: str, at_least: int,
                   timeout_s: float = 30.0) -> list[str]:
    """The free-form replies the sandbox recorded for ``wa_id`` (templates left out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        texts = [m["text"] for m in await whatsapp_messages(http, system, wa_id)
                 if m["type"] == "text"]
        if len(texts) >= at_least or time.monotonic() > deadline:
            return texts
        await asyncio.sleep(0.2)
