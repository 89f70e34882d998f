"""Nothing lost, nothing twice: a service killed mid-batch, and poison messages on a topic."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections import Counter, defaultdict

import httpx
import pytest

from deploy.local.system import System
from services.intake.domain import normalize_phone
from shared.contracts import topics
from shared.contracts.events import parse_event
from tests.e2e import flow
from tests.support.infra import end_offsets, partitions, produce, read_topics

pytestmark = pytest.mark.e2e

BATCH = 24


@pytest.mark.parametrize("victim", ["courier", "intake"])
async def test_sigkill_mid_batch_loses_nothing_and_sends_nothing_twice(system: System, victim: str) -> None:
    rng = random.Random()
    start = await end_offsets([system.topic(t) for t in topics.LIFECYCLE_TOPICS])
    bodies = [flow.applicant_body(rng) for _ in range(BATCH)]
    async with httpx.AsyncClient(timeout=10) as http:

        async def one(body: dict[str, object]) -> str:
            answer = await flow.register(http, system, body)
            await flow.print_request(http, system, answer["request_id"])
            return str(answer["request_id"])

        async def killer() -> None:
            # wait until the batch is in full flow, then kill the victim and bring it back
            await asyncio.sleep(1.0 if victim == "intake" else 2.0)
            system.kill(victim, signal.SIGKILL)
            await asyncio.sleep(1.5)
            system.start(victim)
            system.wait_healthy([victim], timeout_s=60)

        async def staggered(i: int, body: dict[str, object]) -> str:
            await asyncio.sleep(i * 0.12)
            return await one(body)

        kill = asyncio.create_task(asyncio.to_thread(lambda: asyncio.run(killer())))
        ids = await asyncio.gather(*(staggered(i, b) for i, b in enumerate(bodies)))
        await kill
        await flow.wait_delivered(http, system, ids, timeout_s=120)
        for rid in ids:
            await flow.wait_notifications_sent(http, system, rid, expected=5)
        messages = {
            body["applicant"]["phone"]: await flow.whatsapp_messages(  # type: ignore[index]
                http, system, normalize_phone(body["applicant"]["phone"])  # type: ignore[index]
            )
            for body in bodies
        }

    # every fact of every request is on Kafka once (a relay re-send repeats the same event_id)
    records = await read_topics(start)
    facts: dict[tuple[str, str], set[uuid.UUID]] = defaultdict(set)
    for record in records:
        topic = record.topic.removeprefix(system.topic(""))
        event = parse_event(topic, record.value)
        if str(event.request_id) in ids:
            facts[(str(event.request_id), topic)].add(event.event_id)
    for rid in ids:
        for topic in topics.LIFECYCLE_TOPICS:
            assert len(facts[(rid, topic)]) == 1, (rid, topic, facts[(rid, topic)])

    # exactly one WhatsApp message per event: 5 per request, no template twice
    for phone, sent in messages.items():
        counts = Counter(m["template"] for m in sent)
        assert len(sent) == 5 and set(counts.values()) == {1}, (phone, counts)


async def test_unparseable_messages_are_dead_lettered_and_partitions_keep_flowing(system: System) -> None:
    tps = await partitions([system.topic(topics.DOCUMENT_PRINTED)])
    dlq_start = await end_offsets([system.topic(f"dlq.{s}") for s in ("courier", "intake", "notify")])
    marker = f"poison-{uuid.uuid4().hex[:8]}".encode()
    for tp in tps:  # one on every partition, so every later request passes behind one
        await produce(tp.topic, b"\x00garbage " + marker, key=marker, partition=tp.partition)
    rng = random.Random()
    async with httpx.AsyncClient(timeout=10) as http:
        ids = []
        for _ in range(4):
            answer = await flow.register(http, system, flow.applicant_body(rng))
            await flow.print_request(http, system, answer["request_id"])
            ids.append(answer["request_id"])
        await flow.wait_delivered(http, system, ids, timeout_s=60)

    for service in ("courier", "intake", "notify"):
        topic = system.topic(f"dlq.{service}")
        for _ in range(50):
            dead = await read_topics({tp: o for tp, o in dlq_start.items() if tp.topic == topic}, key=marker)
            if len(dead) == len(tps):
                break
            await asyncio.sleep(0.2)
        assert len(dead) == len(tps), (service, len(dead))
        for record in dead:
            headers = dict(record.headers)
            assert headers["dlq-original-topic"] == topics.DOCUMENT_PRINTED.encode()
            assert headers["dlq-reason"].startswith(b"invalid event: ")
            assert marker in record.value
