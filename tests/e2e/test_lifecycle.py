"""The happy path, end to end: HTTP in, five events on Kafka, WhatsApp out."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from datetime import datetime

import httpx
import pytest

from deploy.local.demo import run as run_demo
from deploy.local.system import System
from shared.contracts import topics
from shared.contracts.events import parse_event
from tests.e2e import flow
from tests.support.infra import end_offsets, read_topics

pytestmark = pytest.mark.e2e

PRODUCERS = {
    topics.REQUEST_REGISTERED: "intake",
    topics.DOCUMENT_PRINTED: "printing",
    topics.HANDED_TO_COURIER: "courier",
    topics.COD_PAID: "courier",
    topics.DELIVERED: "courier",
}


@pytest.mark.parametrize("partner", ["jnt", "pos"])
async def test_request_travels_to_delivered_with_every_event_on_kafka(system: System, partner: str) -> None:
    rng = random.Random()
    start = await end_offsets([system.topic(t) for t in topics.LIFECYCLE_TOPICS])
    body = flow.applicant_body(rng, partner)
    nik = body["applicant"]["nik"]
    http_id = f"http-{uuid.uuid4()}"
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await flow.register(http, system, body, request_id_header=http_id)
        request_id = answer["request_id"]
        assert answer["cod_fee"] == 20_000
        await flow.print_request(http, system, request_id)
        (status,) = (await flow.wait_delivered(http, system, [request_id])).values()
        assert status["status"] == "delivered" and status["cod_paid"] is True
        await flow.wait_notifications_sent(http, system, request_id, expected=5)
        messages = await flow.whatsapp_messages(http, system, answer_phone(body))

    records = await read_topics(start, key=request_id.encode())
    assert Counter(r.topic.removeprefix(system.topic("")) for r in records) == {
        t: 1 for t in topics.LIFECYCLE_TOPICS
    }
    events = {
        (t := r.topic.removeprefix(system.topic(""))): (r, parse_event(t, r.value)) for r in records
    }
    event_ids = set()
    for topic, (record, event) in events.items():
        raw = json.loads(record.value)
        assert set(raw) == {"event_id", "event_type", "event_version", "occurred_at", "request_id",
                            "correlation_id", "causation_id", "producer", "data"}
        assert raw["occurred_at"].endswith("Z"), "RFC 3339 UTC"
        datetime.fromisoformat(raw["occurred_at"])
        assert event.event_type == topic
        assert event.event_version == 1
        assert str(event.request_id) == request_id
        assert event.correlation_id == request_id  # the applicant's original request
        assert event.producer == PRODUCERS[topic]
        assert record.key == request_id.encode()
        headers = dict(record.headers)
        assert headers["event_type"] == topic.encode()
        assert headers["event_id"] == str(event.event_id).encode()
        assert headers["correlation_id"] == request_id.encode()
        event_ids.add(event.event_id)
    assert len(event_ids) == 5

    registered = events[topics.REQUEST_REGISTERED][1]
    printed = events[topics.DOCUMENT_PRINTED][1]
    handed = events[topics.HANDED_TO_COURIER][1]
    paid = events[topics.COD_PAID][1]
    delivered = events[topics.DELIVERED][1]
    assert registered.causation_id == http_id  # the HTTP request that registered it
    assert registered.data.applicant.nik == nik
    assert registered.data.cod_fee == 20_000
    assert registered.data.tracking_code == answer["tracking_code"]
    assert printed.data.operator == "operator-e2e"
    assert handed.data.partner == partner and handed.data.cod_amount == 20_000
    assert paid.data.amount == 20_000 and paid.data.waybill == handed.data.waybill
    assert delivered.data.waybill == handed.data.waybill
    assert delivered.data.documents_collected is True
    for later in (handed, paid, delivered):
        assert later.causation_id.startswith(f"{partner}:")  # the partner's callback id

    # one WhatsApp message per event, never the NIK
    assert len(messages) == 5, [m["template"] for m in messages]
    assert Counter(m["template"] for m in messages) == {
        "ketanmu_terdaftar": 1, "ketanmu_dicetak": 1, "ketanmu_dikirim": 1,
        "ketanmu_diterima": 1, "ketanmu_kwitansi_cod": 1,
    }
    assert all(nik not in json.dumps(m) for m in messages)
    handed_msg = next(m for m in messages if m["template"] == "ketanmu_dikirim")
    assert "Rp 20.000" in handed_msg["params"]


def answer_phone(body: dict[str, object]) -> str:
    from services.intake.domain import normalize_phone

    return normalize_phone(body["applicant"]["phone"])  # type: ignore[index]


async def test_demo_delivers_every_request(system: System) -> None:
    code = await run_demo(5, 90.0, system.url("intake"), system.url("printing"), seed=None)
    assert code == 0
