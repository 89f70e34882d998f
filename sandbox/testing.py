"""The sandbox in-process, for tests of the adapters and of the services (no sockets)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI

from sandbox.app import create_app
from sandbox.settings import SandboxSettings
from sandbox.world import World

SANDBOX_BASE_URL = "http://sandbox.test"


@asynccontextmanager
async def in_process_sandbox(
    settings: SandboxSettings | None = None,
    callback_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app and a client talking to it over ASGITransport (``SANDBOX_BASE_URL``).

    Point adapters at ``f"{SANDBOX_BASE_URL}/jnt"`` etc. with this client. ASGITransport runs no
    lifespan, so the world is closed here.
    """
    app = create_app(settings or SandboxSettings(), callback_transport=callback_transport)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=SANDBOX_BASE_URL) as client:
        try:
            yield app, client
        finally:
            world: World = app.state.world
            await world.aclose()


@dataclass
class CourierCall:
    """One callback POST that reached the stand-in courier service, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    event_id: str
    status: int | None  # None: the POST failed with a connection error


Script = Callable[[httpx.Request, int], int | Exception]


def always(status: int = 200) -> Script:
    return lambda _request, _n: status


def fail_first(count: int, answer: int | Exception = 503) -> Script:
    """The first ``count`` POSTs get ``answer`` (a status, or e.g. httpx.ConnectError); then 200."""
    return lambda _request, n: answer if n < count else 200


def event_id_of(path: str, body: bytes, headers: Mapping[str, str]) -> str:
    """The partner's event id in a callback: ``webhook-id`` for Pos, scanId/codId for J&T."""
    if path.endswith("/pos"):
        return headers.get("webhook-id", "")
    biz = json.loads(parse_qs(body.decode())["bizContent"][0])
    items = biz.get("details") or biz.get("codDetails") or [{}]
    return str(items[0].get("scanId") or items[0].get("codId") or "")


class ScriptedCourier:
    """Stands in for the courier service's webhook endpoints (``/webhooks/jnt``, ``/webhooks/pos``):
    records every callback and answers from a script. Pass ``transport`` as the sandbox's
    ``callback_transport``."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or always(200)
        self.calls: list[CourierCall] = []

    def _handle(self, request: httpx.Request) -> httpx.Response:
        n = len(self.calls)
        answer = self.script(request, n)
        headers = {k.lower(): v for k, v in request.headers.items()}
        path = request.url.path
        event_id = event_id_of(path, request.content, headers)
        status = answer if isinstance(answer, int) else None
        self.calls.append(CourierCall(path, headers, request.content, event_id, status))
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, json={"status": answer})

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def accepted(self) -> list[CourierCall]:
        return [c for c in self.calls if c.status is not None and 200 <= c.status < 300]


class SandboxControl:
    """The sandbox's control API (``/sandbox/...``) for tests and demos against a running sandbox."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base = base_url.rstrip("/") + "/sandbox"

    async def script(
        self, order_ref: str, scenario: str | None = None, steps: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"order_ref": order_ref}
        body |= {"scenario": scenario} if scenario else {"steps": steps}
        r = await self.http.post(f"{self.base}/scripts", json=body)
        r.raise_for_status()
        return dict(r.json())

    async def fault(self, target: str, mode: str, seconds: float | None = None) -> None:
        r = await self.http.post(
            f"{self.base}/faults", json={"target": target, "mode": mode, "seconds": seconds}
        )
        r.raise_for_status()

    async def shipments(self, **filters: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.base}/shipments", params=filters)
        r.raise_for_status()
        return list(r.json()["shipments"])

    async def shipment(self, waybill: str) -> dict[str, Any]:
        r = await self.http.get(f"{self.base}/shipments/{waybill}")
        r.raise_for_status()
        return dict(r.json())

    async def callback(self, waybill: str, **order: Any) -> dict[str, Any]:
        r = await self.http.post(f"{self.base}/shipments/{waybill}/callbacks", json=order)
        r.raise_for_status()
        return dict(r.json())

    async def settlement(self, partner: str, day: str) -> str:
        r = await self.http.get(f"{self.base}/settlements/{partner}", params={"date": day})
        r.raise_for_status()
        return r.text

    async def wait_script_finished(self, order_ref: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """The booked shipment of ``order_ref`` once its scripted life has been played."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.shipments(order_ref=order_ref)
            if found and found[0]["script"] and found[0]["script"]["finished"]:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"script for {order_ref} not played: {found}")
            await asyncio.sleep(0.2)
