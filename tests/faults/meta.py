"""Meta's side of the WhatsApp webhook, which the sandbox does not play (yet).

The sandbox records every message the Cloud API accepted but sends no status callbacks and no
inbound messages. ``MetaWebhook`` fills the gap for the fault tests: for each message the sandbox
accepted it POSTs ``sent``, ``delivered`` and ``read`` to notify's ``/webhooks/whatsapp``, signed
with the app secret and carrying the message's ``biz_opaque_callback_data``, retrying until notify
answers 2xx, as Meta does. With ``chaos`` on, each callback is sent twice and in shuffled order.
``applicant_writes`` plays an inbound message (which opens the 24-hour window).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.webhook_signing import META_SIGNATURE_HEADER, sign_meta

APP_SECRET = "wa-dev-app-secret"  # notify's and the sandbox's development default
PHONE_NUMBER_ID = "100000000000001"


def _envelope(value: dict[str, Any]) -> dict[str, Any]:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "62321000000", "phone_number_id": PHONE_NUMBER_ID},
             **value}
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "WABA-TEST", "changes": [{"field": "messages", "value": value}]}]}


def status_payload(message: dict[str, Any], status: str, at: float) -> dict[str, Any]:
    raw: dict[str, Any] = {"id": message["id"], "status": status, "timestamp": str(int(at)),
                           "recipient_id": message["wa_id"]}
    opaque = (message.get("body") or {}).get("biz_opaque_callback_data")
    if opaque:
        raw["biz_opaque_callback_data"] = opaque
    return _envelope({"statuses": [raw]})


def inbound_payload(wa_id: str, text: str, at: float) -> dict[str, Any]:
    return _envelope({
        "contacts": [{"profile": {"name": "Pemohon"}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, "id": f"wamid.in-{uuid.uuid4().hex[:12]}",
                      "timestamp": str(int(at)), "type": "text", "text": {"body": text}}],
    })


@dataclass
class MetaWebhook:
    sandbox_url: str
    notify_url: str
    chaos: bool = False
    posted: int = 0
    retried: int = 0
    _seen: set[str] = field(default_factory=set)
    _queue: list[dict[str, Any]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _rng: random.Random = field(default_factory=random.Random)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="meta-webhook")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def backlog(self) -> int:
        return len(self._queue)

    async def applicant_writes(self, http: httpx.AsyncClient, phone: str, text: str = "Halo") -> None:
        """An inbound message from ``phone``, delivered like Meta delivers it (retried)."""
        payload = inbound_payload(phone.lstrip("+"), text, time.time())
        while not await self._post(http, payload):
            await asyncio.sleep(0.5)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                try:
                    await self._collect(http)
                    await self._deliver(http)
                except httpx.HTTPError:
                    pass  # the sandbox or notify is restarting: next round
                await asyncio.sleep(0.3)

    async def _collect(self, http: httpx.AsyncClient) -> None:
        answer = await http.get(f"{self.sandbox_url}/sandbox/whatsapp/messages")
        now = time.time()
        for message in answer.json()["messages"]:
            if message["id"] in self._seen:
                continue
            self._seen.add(message["id"])
            statuses = [status_payload(message, s, now + i) for i, s in
                        enumerate(("sent", "delivered", "read"))]
            if self.chaos:
                statuses = statuses * 2
                self._rng.shuffle(statuses)
            self._queue.extend(statuses)

    async def _deliver(self, http: httpx.AsyncClient) -> None:
        pending, self._queue = self._queue, []
        for i, payload in enumerate(pending):
            if not await self._post(http, payload):
                self.retried += 1
                self._queue = pending[i:] + self._queue  # in order, next round
                return

    async def _post(self, http: httpx.AsyncClient, payload: dict[str, Any]) -> bool:
        raw = json.dumps(payload).encode()
        headers = {META_SIGNATURE_HEADER: sign_meta(APP_SECRET, raw),
                   "content-type": "application/json"}
        try:
            answer = await http.post(f"{self.notify_url}/webhooks/whatsapp", content=raw,
                                     headers=headers)
        except httpx.HTTPError:
            return False
        self.posted += 1
        return answer.is_success
