"""Break things on purpose, then prove the guarantees (DESIGN.md section 3) held.

Each scenario pushes a batch of requests through the running system (services as processes, real
Kafka, real PostgreSQL, the partner sandbox) while one fault strikes, waits for quiet, and audits
(``scenario.audit_batch``): lost and duplicated counts go into the fault table.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import pytest

from deploy.local.system import ROOT
from shared.contracts import topics
from tests.faults import report
from tests.faults.scenario import Context, print_all, push, settle
from tests.support.infra import partitions, produce, read_topics

pytestmark = pytest.mark.faults

N = 12  # requests in flight per scenario


async def _bounce(ctx: Context, name: str, after_s: float, down_s: float = 1.0) -> None:
    await asyncio.sleep(after_s)
    ctx.system.kill(name, signal.SIGKILL)
    await asyncio.sleep(down_s)
    ctx.system.start(name)
    await asyncio.to_thread(ctx.system.wait_healthy, [name], 90)


def _check(fault: str, audit: Any, extra: str = "", ok: bool = True) -> None:
    report.record(fault, audit, extra, passed=audit.clean and ok)
    assert audit.clean and ok, audit.describe()


def _no_dead_letters(audit: Any) -> bool:
    return not any(audit.dead_letters.values())


# when each service is busy with the batch: intake and printing at once, courier once bookings and
# partner callbacks flow, notify throughout
KILL_AT = {"intake": 0.8, "printing": 1.2, "courier": 2.5, "notify": 2.0}


@pytest.mark.parametrize("victim", ["intake", "printing", "courier", "notify"])
async def test_sigkill_mid_stream(ctx: Context, victim: str) -> None:
    batch = await push(ctx, N, fault=lambda: _bounce(ctx, victim, KILL_AT[victim]))
    audit = await settle(ctx, batch)
    _check(f"SIGKILL {victim} mid-stream", audit, "no dead letters", _no_dead_letters(audit))


async def test_kafka_broker_restart(ctx: Context) -> None:
    before = ctx.infra.kafka_pid()

    async def restart() -> None:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(ctx.infra.restart_kafka)

    batch = await push(ctx, N, fault=restart)
    audit = await settle(ctx, batch)
    restarted = ctx.infra.kafka_pid() != before
    _check("Kafka broker restart", audit, "no dead letters", _no_dead_letters(audit) and restarted)


async def _postmaster_started(ctx: Context) -> Any:
    conn = await asyncpg.connect(ctx.dsn)
    try:
        return await conn.fetchval("SELECT pg_postmaster_start_time()")
    finally:
        await conn.close()


async def test_postgresql_restart(ctx: Context) -> None:
    before = await _postmaster_started(ctx)

    async def restart() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(ctx.infra.restart_postgres)

    batch = await push(ctx, N, fault=restart)
    audit = await settle(ctx, batch)
    restarted = await _postmaster_started(ctx) != before
    _check("PostgreSQL restart", audit, "no dead letters", _no_dead_letters(audit) and restarted)


async def _sandbox_fault(ctx: Context, target: str, mode: str, seconds: float, after_s: float) -> None:
    await asyncio.sleep(after_s)
    r = await ctx.http.post(f"{ctx.system.url('sandbox')}/sandbox/faults",
                            json={"target": target, "mode": mode, "seconds": seconds})
    r.raise_for_status()


async def test_whatsapp_api_errors_for_a_while(ctx: Context) -> None:
    batch = await push(ctx, N, fault=lambda: _sandbox_fault(ctx, "whatsapp", "error", 5, 0.5))
    audit = await settle(ctx, batch)
    _check("WhatsApp API 503 for 5 s", audit, "retried with backoff, none given up")


async def test_whatsapp_api_times_out_for_a_while(ctx: Context) -> None:
    # Held requests are served when the outage ends, after notify gave up waiting (3 s): those
    # messages were accepted. Their status callbacks, not a resend, settle them.
    batch = await push(ctx, N, fault=lambda: _sandbox_fault(ctx, "whatsapp", "timeout", 8, 0.5))
    audit = await settle(ctx, batch)
    _check("WhatsApp API hangs for 8 s (client timeout 3 s)", audit,
           "unanswered sends confirmed by status callbacks, not resent")


async def test_courier_partners_fail_and_time_out(ctx: Context) -> None:
    async def outages() -> None:
        await asyncio.gather(_sandbox_fault(ctx, "jnt", "error", 6, 1.0),
                             _sandbox_fault(ctx, "pos", "timeout", 6, 1.0))

    batch = await push(ctx, N, fault=outages)
    audit = await settle(ctx, batch)
    _check("J&T 503 and Pos hanging for 6 s", audit, "bookings retried, partner dedupes")


async def test_duplicated_and_reordered_deliveries(ctx: Context) -> None:
    ctx.meta.chaos = True  # every WhatsApp status callback twice, shuffled
    batch = await push(ctx, N)
    audit = await settle(ctx, batch)
    assert audit.clean, audit.describe()
    # every event of the batch delivered again, newest first, to every consumer
    records = await read_topics(batch.start, topics=[ctx.topic(t) for t in topics.EVENT_TOPICS])
    ours = [r for r in records if r.key and r.key.decode() in set(batch.ids)]
    for record in reversed(ours):
        await produce(record.topic, record.value, key=record.key, headers=list(record.headers))
    # and every partner callback of the batch again: a late repeat of the delivery
    for rid in batch.ids:
        found = (await ctx.http.get(f"{ctx.system.url('sandbox')}/sandbox/shipments",
                                    params={"order_ref": rid})).json()["shipments"]
        await ctx.http.post(f"{ctx.system.url('sandbox')}/sandbox/shipments/{found[0]['waybill']}"
                            "/callbacks", json={"kind": "delivered", "duplicate": True})
    await asyncio.sleep(3.0)  # let the consumers chew on them
    audit = await settle(ctx, batch)
    _check("duplicated and reordered deliveries", audit,
           f"{len(ours)} events redelivered newest first; partner callbacks and WhatsApp "
           "statuses twice, out of order")


def _deadletters(ctx: Context, *args: str) -> str:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": ctx.infra.kafka,
           "KAFKA_TOPIC_PREFIX": ctx.topic("")}
    done = subprocess.run([sys.executable, "-m", "shared.kafka.deadletters", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


async def test_poison_messages_are_dead_lettered_and_partitions_keep_flowing(ctx: Context) -> None:
    marker = f"poison-{uuid.uuid4().hex[:8]}".encode()
    printed = await partitions([ctx.topic(topics.DOCUMENT_PRINTED)])
    future = {"event_id": str(uuid.uuid4()), "event_type": topics.DELIVERED, "event_version": 99,
              "occurred_at": "2026-01-01T00:00:00Z", "request_id": str(uuid.uuid4()),
              "correlation_id": "x", "causation_id": "x", "producer": "courier",
              "data": {"partner": "jnt", "waybill": "JX0000000001", "received_by": "Siti",
                       "delivered_at": "2026-01-01T00:00:00Z", "documents_collected": True}}

    async def poison() -> None:
        await asyncio.sleep(0.5)  # mid-stream; one on every partition: the batch passes behind
        for tp in printed:
            await produce(tp.topic, b"\x00not json " + marker, key=marker, partition=tp.partition)
        await produce(ctx.topic(topics.DELIVERED), json.dumps(future).encode(), key=marker)

    batch = await push(ctx, N, fault=poison)
    audit = await settle(ctx, batch)
    # document-printed's consumers: intake, courier, notify; delivered's: intake, notify
    expected = {"intake": len(printed) + 1, "printing": 0, "courier": len(printed),
                "notify": len(printed) + 1}
    listed = [json.loads(line) for line in _deadletters(ctx, "list", "--json").splitlines()]
    ours = [d for d in listed if d["key"] == marker.decode()]
    by_service = {s: sum(d["ref"].startswith(s + ":") for d in ours) for s in expected}
    ok = audit.dead_letters == expected and by_service == expected
    _check("poison messages (garbage, unknown version)", audit,
           f"dead-lettered {sum(expected.values())} (table and dlq.* topics, listed by the tool)",
           ok)
    assert ok, (audit.dead_letters, by_service)


async def test_whatsapp_down_beyond_retries_is_dead_lettered_then_replayed(ctx: Context) -> None:
    await ctx.http.post(f"{ctx.system.url('sandbox')}/sandbox/faults",
                        json={"target": "whatsapp", "mode": "error"})
    batch = await push(ctx, 4, print_them=False)
    failed: list[dict[str, Any]] = []
    for _ in range(120):  # 8 attempts with backoff: about 12 s
        rows = (await ctx.http.get(f"{ctx.system.url('notify')}/notifications",
                                   params={"status": "failed"})).json()["notifications"]
        failed = [n for n in rows if n["request_id"] in batch.ids]
        if len(failed) == len(batch.ids):
            break
        await asyncio.sleep(0.5)
    assert len(failed) == len(batch.ids), failed
    listed = [json.loads(line) for line in _deadletters(ctx, "list", "--service", "notify",
                                                        "--json").splitlines()]
    refs = [d["ref"] for d in listed if d["key"] in batch.ids and d["kind"] == "whatsapp-send"]
    assert len(refs) == len(batch.ids), listed
    shown = _deadletters(ctx, "show", refs[0])
    assert "dlq-reason: whatsapp send failed after 8 attempt(s)" in shown
    # the cause is fixed: WhatsApp is back; ops replay the dead letters
    await ctx.http.post(f"{ctx.system.url('sandbox')}/sandbox/faults",
                        json={"target": "whatsapp", "mode": "ok"})
    _deadletters(ctx, "replay", *refs)
    await print_all(ctx, batch)
    audit = await settle(ctx, batch)
    _check("WhatsApp down beyond the retries", audit,
           f"{len(refs)} sends given up and dead-lettered, replayed with the tool, sent once")

