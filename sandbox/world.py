"""The sandbox's outside world: books shipments, plays their lives, delivers callbacks like a partner.

Callback delivery behaves like a real partner's: any non-2xx answer or connection error is retried
with exponential backoff (start 200 ms, doubling, cap 5 s, with jitter) until the courier service
accepts it. One shared HTTP client and a semaphore bound the POSTs in flight, so a burst of
shipments cannot open thousands of sockets.

Callbacks go out on a plain keep-alive connection pool (``shared.http_wire.WirePool``, what the
services' httpx clients send on, without httpx's request and response models on top: the sandbox
plays the partners for the benchmark, and those models were a good part of its CPU for nothing it
needs). Tests that pass a ``callback_transport`` (an httpx transport: ``ScriptedCourier``) still get
an httpx client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx

from sandbox.callbacks import CallbackFact, SignedRequest, occurred, signed_request
from sandbox.scripts import Step
from sandbox.settings import CodOrder, SandboxSettings
from sandbox.state import CallbackRecord, FactKind, ScriptProgress, Shipment, State, utc_now
from shared.http_client import outbound_client
from shared.http_wire import Timeouts, WirePool

_ANSWER_PREVIEW_CHARS = 2000


@dataclass
class PlayConfig:
    """The part of the settings that tests and demos may change at run time."""

    autoplay: bool
    step_delay_ms: int
    cod_order: CodOrder

    @classmethod
    def from_settings(cls, settings: SandboxSettings) -> PlayConfig:
        return cls(settings.autoplay, settings.step_delay_ms, settings.cod_order)


@dataclass(frozen=True)
class Answer:
    """What the courier service answered to one callback POST."""

    status_code: int | None
    body: Any
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def to_json(self) -> dict[str, Any]:
        return {"status_code": self.status_code, "body": self.body, "error": self.error}


class World:
    def __init__(
        self,
        settings: SandboxSettings,
        callback_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.state = State(seed=settings.seed)
        self.config = PlayConfig.from_settings(settings)
        self._transport = callback_transport
        self._client: httpx.AsyncClient | None = None
        self._wire: WirePool | None = None
        self._courier_url = settings.courier_url.rstrip("/")
        # httpx.Timeout(callback_timeout_s), as the httpx client has: connecting, waiting for a free
        # connection, and each wait for the answer's next bytes
        t = settings.callback_timeout_s
        self._timeouts = Timeouts(connect=t, pool=t, read=t)
        self._semaphore = asyncio.Semaphore(settings.callback_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._jitter = random.Random(settings.seed)

    @property
    def client(self) -> httpx.AsyncClient:
        """The httpx client over ``callback_transport`` (tests only)."""
        # Created on first use so the app also works without a lifespan (ASGITransport in tests).
        if self._client is None:
            n = self.settings.callback_concurrency
            self._client = outbound_client(
                base_url=self.settings.courier_url,
                transport=self._transport,
                timeout=httpx.Timeout(self.settings.callback_timeout_s),
                max_connections=n,
            )
        return self._client

    @property
    def wire(self) -> WirePool:
        """The keep-alive connections callbacks go out on (created on first use)."""
        if self._wire is None or self._wire.closed:
            self._wire = WirePool(max_connections=self.settings.callback_concurrency)
        return self._wire

    @property
    def playing(self) -> int:
        """Shipments whose life is still being played (waiting for a step or a delivery)."""
        return len(self._tasks)

    @property
    def pending_callbacks(self) -> int:
        return sum(not c.delivered for s in self.state.shipments.values() for c in s.callbacks)

    # --- bookings -------------------------------------------------------------------------------

    def book(
        self,
        partner: str,
        order_ref: str,
        cod_amount: int,
        recipient_name: str,
        booking: dict[str, Any],
    ) -> tuple[Shipment, bool]:
        """The shipment for ``order_ref``: the existing one when the order was seen before."""
        existing = self.state.orders.get((partner, order_ref))
        if existing is not None:
            return self.state.shipments[existing], False
        waybill = (
            self.state.new_waybill("JX", 10)
            if partner == "jnt"
            else self.state.new_waybill("P", 12)
        )
        shipment = Shipment(
            partner=partner,
            waybill=waybill,
            order_ref=order_ref,
            cod_amount=cod_amount,
            recipient_name=recipient_name,
            booked_at=utc_now(),
            booking=booking,
        )
        self.state.shipments[waybill] = shipment
        self.state.orders[(partner, order_ref)] = waybill
        scripted = self.state.scripts.get(order_ref)
        if scripted is not None:
            self._spawn(self.play_script(shipment, scripted[1], scripted[0]))
        elif self.config.autoplay:
            self._spawn(self.play(shipment))
        return shipment, True

    def script(self, order_ref: str, steps: list[Step], name: str | None) -> Shipment | None:
        """Play ``steps`` as the life of ``order_ref``'s shipment: now when it is booked already
        (returned), otherwise once it is."""
        self.state.scripts[order_ref] = (name, steps)
        booked = [
            self.state.shipments[w]
            for (_, ref), w in self.state.orders.items()
            if ref == order_ref
        ]
        for shipment in booked:
            self._spawn(self.play_script(shipment, steps, name))
        return booked[0] if booked else None

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the life of a shipment -----------------------------------------------------------------

    def life_script(self) -> list[FactKind]:
        order = self.config.cod_order
        if order == "random":
            order = self.state.rng.choice(("before", "after"))
        ending: list[FactKind] = (
            ["cod_collected", "delivered"] if order == "before" else ["delivered", "cod_collected"]
        )
        return ["picked_up", *ending]

    async def play(self, shipment: Shipment) -> None:
        """Pick-up, COD and delivery, one step after another. Each callback is delivered (with
        retries) before the next fact happens, so one shipment's callbacks keep their order."""
        for kind in self.life_script():
            await asyncio.sleep(self.config.step_delay_ms / 1000)
            if shipment.status == "cancelled":
                return
            fact = self.record_fact(shipment, kind, "autoplay")
            await self.deliver(shipment, fact)

    async def play_script(self, shipment: Shipment, steps: list[Step], name: str | None) -> None:
        """The steps one after another; each regular callback is delivered (with retries) before
        the next fact happens, a forged or stale one is sent once."""
        progress = shipment.script = ScriptProgress(name, len(steps))
        for step in steps:
            delay = self.config.step_delay_ms if step.delay_ms is None else step.delay_ms
            await asyncio.sleep(delay / 1000)
            if shipment.status == "cancelled":
                return
            at = step.occurred_at
            if step.occurred_offset_s is not None:
                at = utc_now() + timedelta(seconds=step.occurred_offset_s)
            fact = self.record_fact(
                shipment, step.kind, "script", cod_amount=step.cod_amount,
                received_by=step.received_by, documents_collected=step.documents_collected,
                reason=step.reason, applies=not step.forged, occurred_at=at,
            )
            if step.forged:
                answer = await self.post_once(
                    shipment, fact, bad_signature=step.bad_signature, stale=step.stale_timestamp
                )
                progress.answers.append(answer.status_code)
            else:
                await self.deliver(shipment, fact)
                if step.duplicate:
                    progress.answers.append((await self.post_once(shipment, fact)).status_code)
            progress.played += 1
        progress.finished = True

    def record_fact(
        self,
        shipment: Shipment,
        kind: FactKind,
        source: Literal["autoplay", "manual", "script"],
        *,
        cod_amount: int | None = None,
        received_by: str | None = None,
        documents_collected: bool | None = None,
        reason: str | None = None,
        applies: bool = True,
        occurred_at: datetime | None = None,
    ) -> CallbackFact:
        """A new fact about ``shipment``; ``applies=False`` for a forged one (bad signature), which
        is sent but does not change what the partner knows about the shipment."""
        if kind == "cod_collected" and cod_amount is None:
            cod_amount = shipment.cod_amount
        if kind == "delivered":
            received_by = received_by or shipment.recipient_name
            documents_collected = True if documents_collected is None else documents_collected
        if kind in ("delivery_failed", "returned") and reason is None:
            reason = "Penerima tidak di tempat"
        record = CallbackRecord(
            event_id=self.state.token(8),
            kind=kind,
            occurred_at=occurred(occurred_at or utc_now()),
            source=source,
            cod_amount=cod_amount,
            applies=applies,
        )
        shipment.callbacks.append(record)
        if applies and kind != "cod_collected":
            shipment.status = kind
        return CallbackFact(record, received_by, documents_collected, reason)

    # --- delivery to the courier service --------------------------------------------------------

    async def post_once(
        self,
        shipment: Shipment,
        fact: CallbackFact,
        *,
        bad_signature: bool = False,
        stale: bool = False,
    ) -> Answer:
        record = fact.record
        if record.first_sent_at is None:
            # before the semaphore and the signing: what follows counts as Ketanmu's time
            record.first_sent_at = time.time()
        async with self._semaphore:
            request = signed_request(
                self.settings, shipment, fact, time.time(), bad_signature, stale
            )
            if self._transport is not None:
                answer = await self._post_httpx(request)
            else:
                answer = await self._post(request)
        record.attempts += 1
        record.last_status, record.last_error = answer.status_code, answer.error
        if answer.ok:
            # Truthful even for a tampered callback: if the courier service took it, it says so.
            record.delivered = True
            record.delivered_at = record.delivered_at or utc_now()
        return answer

    async def _post(self, request: SignedRequest) -> Answer:
        try:
            answer = await self.wire.exchange(
                "POST", self._courier_url + request.path, list(request.headers.items()),
                request.body, self._timeouts,
            )
        except httpx.HTTPError as exc:  # ConnectError, ReadTimeout...: as httpx names them
            return Answer(None, None, f"{type(exc).__name__}: {exc}")
        return Answer(answer.status, _preview(answer.content, _charset(answer.headers)))

    async def _post_httpx(self, request: SignedRequest) -> Answer:
        try:
            response = await self.client.post(
                request.path, content=request.body, headers=request.headers
            )
        except httpx.HTTPError as exc:
            return Answer(None, None, f"{type(exc).__name__}: {exc}")
        return Answer(response.status_code, _preview(response.content, response.charset_encoding))

    async def deliver(self, shipment: Shipment, fact: CallbackFact) -> None:
        delay = self.settings.retry_start_ms / 1000
        cap = self.settings.retry_cap_ms / 1000
        while not (await self.post_once(shipment, fact)).ok:
            # Jitter spreads the retries of many callbacks when the courier service comes back.
            await asyncio.sleep(delay * self._jitter.uniform(0.5, 1.0))
            delay = min(delay * 2, cap)

    # --- lifecycle ------------------------------------------------------------------------------

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reset(self) -> None:
        await self._cancel_tasks()
        self.state = State(seed=self.settings.seed)
        self.config = PlayConfig.from_settings(self.settings)

    async def aclose(self) -> None:
        await self._cancel_tasks()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._wire is not None:
            await self._wire.close()
            self._wire = None


def _charset(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The charset a Content-Type header names, if any."""
    for name, value in headers:
        if name.lower() == b"content-type":
            for param in value.decode("latin-1").split(";")[1:]:
                key, _, val = param.strip().partition("=")
                if key.lower() == "charset" and val:
                    return val.strip('"')
    return None


def _preview(body: bytes, charset: str | None) -> Any:
    """The answer as JSON, or the start of its text (as httpx's ``json()`` and ``text`` read it)."""
    try:
        return json.loads(body)
    except ValueError:
        try:
            text = body.decode(charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            text = body.decode("utf-8", errors="replace")
        return text[:_ANSWER_PREVIEW_CHARS]
