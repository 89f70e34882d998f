"""One fault scenario: push a batch of requests through while something breaks, wait for quiet,
then audit what the outside world and Kafka saw.

The audit is the guarantees of DESIGN.md section 3, counted rather than asserted, so the report
can say how much was lost or duplicated:

* every request reached a terminal state (delivered, COD paid);
* every fact is on Kafka once: one ``event_id`` per (request, topic) (a relay re-sending the same
  event is allowed: consumers dedupe on ``event_id``);
* no effect twice: one WhatsApp message per (event, recipient), one booking per request;
* nothing left in any service's outbox, no notification failed, no dead letter.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from pydantic import ValidationError

from deploy.local.demo import operator_headers, sample_request
from deploy.local.system import SERVICES, System
from services.notify.domain import DOOR_EVENTS
from shared.contracts import topics
from shared.contracts.events import UnsupportedEvent, parse_event
from tests.faults.infra import FaultInfra
from tests.faults.meta import MetaWebhook
from tests.support.infra import end_offsets, read_topics

QUIET_TIMEOUT_S = 180.0


@dataclass
class Context:
    system: System
    infra: FaultInfra
    dsn: str
    meta: MetaWebhook
    http: httpx.AsyncClient

    def topic(self, name: str) -> str:
        return self.system.topic(name)


@dataclass
class Batch:
    ids: list[str] = field(default_factory=list)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    writers: set[str] = field(default_factory=set)  # phones that wrote to us: free text
    start: dict[Any, int] = field(default_factory=dict)
    dead_letters_before: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


@dataclass
class Audit:
    requests: int
    lost: Counter[str] = field(default_factory=Counter)
    duplicated: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    dead_letters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.violations)

    def describe(self) -> str:
        return (f"lost={dict(self.lost)} duplicated={dict(self.duplicated)} "
                f"violations={dict(self.violations)} dead_letters={self.dead_letters}")


def phone_of(body: dict[str, Any]) -> str:
    from services.intake.domain import normalize_phone

    return str(normalize_phone(body["applicant"]["phone"]))


def bodies_for(n: int, rng: random.Random, partners: tuple[str, ...] = ("jnt", "pos")) -> list[dict[str, Any]]:
    """Sample requests; every fourth has someone else at the door (who is told too)."""
    bodies = []
    for i in range(n):
        body = sample_request(rng, partners[i % len(partners)])
        if i % 4 == 1:
            body["delivery"]["recipient_name"] = "Keluarga " + body["applicant"]["name"]
            body["delivery"]["recipient_phone"] = f"+62857{rng.randrange(10**7, 10**8)}"
        bodies.append(body)
    return bodies


async def register(ctx: Context, body: dict[str, Any]) -> str:
    """Register with an Idempotency-Key, retrying while intake is away (as a client would)."""
    headers = {"Idempotency-Key": f"faults-{uuid.uuid4().hex}"}
    for _ in range(240):
        try:
            r = await ctx.http.post(f"{ctx.system.url('intake')}/requests", json=body, headers=headers)
            if r.status_code in (200, 201):
                return str(r.json()["request_id"])
            if r.status_code < 500:
                raise AssertionError(f"registration refused: {r.status_code} {r.text}")
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise AssertionError("intake did not accept the registration")


async def mark_printed(ctx: Context, request_id: str) -> None:
    """The operator marks the job printed; retried until it answers (idempotent: same number)."""
    number = f"3516-{uuid.UUID(request_id).hex[:10].upper()}"
    for _ in range(480):
        try:
            r = await ctx.http.post(
                f"{ctx.system.url('printing')}/print-jobs/{request_id}/printed",
                json={"document_number": number, "operator": "operator-faults"},
            )
            if r.status_code == 200:
                return
            if r.status_code not in (404,) and r.status_code < 500:
                raise AssertionError(f"print refused: {r.status_code} {r.text}")
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.25)
    raise AssertionError(f"could not print {request_id}")


async def push(
    ctx: Context,
    n: int,
    *,
    fault: Callable[[], Awaitable[Any]] | None = None,
    partners: tuple[str, ...] = ("jnt", "pos"),
    print_them: bool = True,
    stagger_s: float = 0.12,
) -> Batch:
    """Register (and print) ``n`` requests, staggered, while ``fault`` runs alongside."""
    batch = Batch(start=await end_offsets([ctx.topic(t) for t in topics.EVENT_TOPICS]),
                  dead_letters_before=await dead_letter_counts(ctx))
    bodies = bodies_for(n, random.Random(), partners)
    for i, body in enumerate(bodies):
        if i % 4 == 2:  # this applicant wrote to us first: the 24-hour window is open
            await ctx.meta.applicant_writes(ctx.http, phone_of(body), "Halo, saya mau urus dokumen")
            batch.writers.add(phone_of(body))

    async def one(i: int, body: dict[str, Any]) -> None:
        await asyncio.sleep(i * stagger_s)
        rid = await register(ctx, body)
        batch.ids.append(rid)
        batch.bodies[rid] = body
        if print_them:
            await mark_printed(ctx, rid)

    await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)), *([fault()] if fault else []))
    return batch


async def print_all(ctx: Context, batch: Batch) -> None:
    await asyncio.gather(*(mark_printed(ctx, rid) for rid in batch.ids))


async def _sql(ctx: Context, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(ctx.dsn, timeout=5)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _outbox_backlog(ctx: Context) -> dict[str, int]:
    union = " UNION ALL ".join(f"SELECT '{s}' AS s, count(*) AS n FROM {s}.outbox" for s in SERVICES)
    return {r["s"]: r["n"] for r in await _sql(ctx, union)}


async def _status(ctx: Context, rid: str) -> dict[str, Any]:
    r = await ctx.http.get(f"{ctx.system.url('intake')}/requests/{rid}", headers=operator_headers())
    return dict(r.json())


def _terminal(status: dict[str, Any]) -> bool:
    return status.get("status") == "delivered" and bool(status.get("cod_paid"))


async def _quiet(ctx: Context, batch: Batch, expected_messages: int) -> bool:
    try:
        for rid in batch.ids:
            if not _terminal(await _status(ctx, rid)):
                return False
        rows = await _sql(ctx, "SELECT status FROM notify.notifications WHERE request_id = ANY($1::uuid[])",
                          batch.ids)
        if len(rows) < expected_messages or any(r["status"] != "sent" for r in rows):
            return False
        if any((await _outbox_backlog(ctx)).values()):
            return False
        sandbox = (await ctx.http.get(f"{ctx.system.url('sandbox')}/sandbox/health")).json()
        return sandbox["pending_callbacks"] == 0 and ctx.meta.backlog == 0
    except (httpx.HTTPError, OSError, asyncpg.PostgresError, ValueError, KeyError):
        return False


def expected_message_count(batch: Batch) -> int:
    separate = sum(1 for b in batch.bodies.values() if "recipient_phone" in b["delivery"])
    return len(batch.ids) * len(topics.LIFECYCLE_TOPICS) + separate * len(
        DOOR_EVENTS & set(topics.LIFECYCLE_TOPICS)
    )


async def settle(ctx: Context, batch: Batch, timeout_s: float = QUIET_TIMEOUT_S) -> Audit:
    """Wait until nothing moves any more (or the timeout), then audit."""
    deadline = time.monotonic() + timeout_s
    expected = expected_message_count(batch)
    while time.monotonic() < deadline and not await _quiet(ctx, batch, expected):
        await asyncio.sleep(1.0)
    audit = await audit_batch(ctx, batch)
    audit.seconds = time.monotonic() - batch.started
    return audit


async def audit_batch(ctx: Context, batch: Batch) -> Audit:
    audit = Audit(requests=len(batch.ids))
    ids = set(batch.ids)
    for rid in batch.ids:
        if not _terminal(await _status(ctx, rid)):
            audit.lost["request not terminal"] += 1

    # every fact once on Kafka
    prefix = ctx.topic("")
    facts: dict[tuple[str, str], set[uuid.UUID]] = defaultdict(set)
    waybills: dict[str, str] = {}
    for record in await read_topics(batch.start, topics=[ctx.topic(t) for t in topics.EVENT_TOPICS]):
        try:
            event = parse_event(record.topic.removeprefix(prefix), record.value)
        except (ValidationError, UnsupportedEvent):
            continue  # a poison message: no fact of any request
        rid = str(event.request_id)
        if rid in ids:
            facts[(rid, event.event_type)].add(event.event_id)
            if event.event_type == topics.HANDED_TO_COURIER:
                waybills[rid] = event.data.waybill
    for rid in batch.ids:
        for topic in topics.LIFECYCLE_TOPICS:
            count = len(facts[(rid, topic)])
            if count == 0:
                audit.lost[f"event {topic}"] += 1
            elif count > 1:
                audit.duplicated[f"event {topic}"] += count - 1
        for topic in topics.FAILURE_TOPICS:
            if facts[(rid, topic)]:
                audit.violations[f"unexpected {topic}"] += 1

    # one WhatsApp message per (event, recipient), free text only to those who wrote
    messages = (await ctx.http.get(f"{ctx.system.url('sandbox')}/sandbox/whatsapp/messages")).json()["messages"]
    by_ref: Counter[str] = Counter()
    kind_of: dict[str, set[str]] = defaultdict(set)
    phones = {phone_of(b).lstrip("+") for b in batch.bodies.values()}
    for m in messages:
        ref = (m.get("body") or {}).get("biz_opaque_callback_data")
        if ref:
            by_ref[ref] += 1
            kind_of[ref].add(m["type"])
        elif m["wa_id"] in phones:
            audit.duplicated["message without reference"] += 1
    for rid in batch.ids:
        body = batch.bodies[rid]
        writer = phone_of(body) in batch.writers
        for topic in topics.LIFECYCLE_TOPICS:
            for event_id in sorted(facts[(rid, topic)])[:1]:
                recipients = ["applicant"]
                if "recipient_phone" in body["delivery"] and topic in DOOR_EVENTS:
                    recipients.append("delivery")
                for recipient in recipients:
                    ref = f"{event_id}/{recipient}"
                    if by_ref[ref] == 0:
                        audit.lost["whatsapp message"] += 1
                    elif by_ref[ref] > 1:
                        audit.duplicated["whatsapp message"] += by_ref[ref] - 1
                    want = "text" if writer and recipient == "applicant" else "template"
                    if by_ref[ref] and kind_of[ref] != {want}:
                        audit.violations[f"{want} expected"] += 1

    # one booking per request, the one the courier announced
    for rid in batch.ids:
        found = (await ctx.http.get(f"{ctx.system.url('sandbox')}/sandbox/shipments",
                                    params={"order_ref": rid})).json()["shipments"]
        if not found:
            audit.lost["booking"] += 1
        elif len(found) > 1:
            audit.duplicated["booking"] += len(found) - 1
        elif rid in waybills and found[0]["waybill"] != waybills[rid]:
            audit.violations["waybill differs from the partner's"] += 1

    # nothing left behind
    for schema, n in (await _outbox_backlog(ctx)).items():
        if n:
            audit.violations[f"{schema} outbox not empty"] += n
    failed = await _sql(ctx, "SELECT count(*) AS n FROM notify.notifications"
                        " WHERE request_id = ANY($1::uuid[]) AND status <> 'sent'", batch.ids)
    if failed[0]["n"]:
        audit.violations["notification not sent"] += failed[0]["n"]
    now = await dead_letter_counts(ctx)
    audit.dead_letters = {s: now[s] - batch.dead_letters_before.get(s, 0) for s in SERVICES}
    return audit


async def dead_letter_counts(ctx: Context) -> dict[str, int]:
    """Messages each service's consumer dead-lettered so far (its ``dead_letter`` table)."""
    union = " UNION ALL ".join(f"SELECT '{s}' AS s, count(*) AS n FROM {s}.dead_letter" for s in SERVICES)
    return {r["s"]: r["n"] for r in await _sql(ctx, union)}
