"""Steps the e2e tests share: register, print, wait, and look at what the outside world saw."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from deploy.local.demo import mark_printed, sample_request
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
    return dict((await http.get(f"{system.url('intake')}/requests/{request_id}")).json())


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
