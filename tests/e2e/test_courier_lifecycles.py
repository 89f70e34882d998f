"""Every path of the shipment's state machine, driven through the partners' signed webhooks.

Each scenario is a scripted life the sandbox plays for one request's shipment (sandbox/scripts.py):
Pos and J&T callbacks in their wire formats, out of order, duplicated, forged, late. The running
services (real Kafka, PostgreSQL) turn them into events; each test checks the events on Kafka for
its request, exactly, and what the courier service recorded.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from aiokafka import TopicPartition

from deploy.local.system import System
from sandbox.settings import SandboxSettings
from sandbox.testing import SandboxControl
from shared.contracts import topics
from shared.contracts.events import parse_event
from shared.webhook_signing import jnt_digest, sign_standard
from tests.e2e import flow
from tests.support.infra import end_offsets, read_topics

pytestmark = pytest.mark.e2e

COURIER_TOPICS = (
    topics.HANDED_TO_COURIER, topics.COD_PAID, topics.DELIVERED, topics.DELIVERY_FAILED,
    topics.RETURNED_TO_OFFICE,
)
H, C, D, F, R = COURIER_TOPICS
DEV = SandboxSettings()  # the dev secrets the e2e system runs with


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 60.0) -> Any:
    """The first truthy result of ``check``, polled; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.3)


async def courier_events(system: System, start: dict[TopicPartition, int], rid: str) -> list[Any]:
    records = await read_topics(start, key=rid.encode())
    prefix = system.topic("")
    return [
        parse_event(t, r.value)
        for r in records
        if (t := r.topic.removeprefix(prefix)) in COURIER_TOPICS
    ]


async def wait_events(
    system: System, start: dict[TopicPartition, int], rid: str, expected: Counter[str]
) -> list[Any]:
    """The request's courier events once ``expected`` are all on Kafka; then exactly those."""
    async def arrived() -> list[Any] | None:
        events = await courier_events(system, start, rid)
        counts = Counter(e.event_type for e in events)
        return events if all(counts[t] >= n for t, n in expected.items()) else None

    events = await eventually(arrived)
    assert Counter(e.event_type for e in events) == expected
    return list(events)


async def start_request(
    http: httpx.AsyncClient, system: System, sandbox: SandboxControl, partner: str,
    scenario: str | None = None, steps: list[dict[str, Any]] | None = None,
) -> str:
    """Register, script its shipment's life in the sandbox, print: the request id."""
    answer = await flow.register(http, system, flow.applicant_body(random.Random(), partner))
    rid = str(answer["request_id"])
    await sandbox.script(rid, scenario=scenario, steps=steps)
    await flow.print_request(http, system, rid)
    return rid


@dataclass
class Played:
    rid: str
    partner: str
    shipment: dict[str, Any]  # the courier service's view, with anomalies and callbacks
    sandbox: dict[str, Any]  # what the sandbox played


SCENARIOS: dict[str, tuple[str, list[dict[str, Any]] | None]] = {
    "cod_then_delivered": ("pos", None),
    "delivered_then_cod": ("jnt", None),
    "failed_then_delivered": ("jnt", None),
    "failed_then_returned": ("pos", None),
    "wrong_cod_amount": ("jnt", None),
    "documents_not_collected": ("pos", None),
    "duplicate_callbacks": ("pos", None),
    "out_of_order": ("jnt", None),
    "late_failure_after_delivery": ("pos", None),
    "forged_and_stale": ("jnt", None),
    "delivered_after_return": ("jnt", [
        {"kind": "picked_up"}, {"kind": "returned", "reason": "Alamat tidak lengkap"},
        {"kind": "delivered"}, {"kind": "cod_collected"},
    ]),
    "duplicate_returns": ("pos", [
        {"kind": "picked_up"}, {"kind": "returned", "duplicate": True},
        {"kind": "returned", "reason": "scan ulang / rescanned"},
    ]),
}


@pytest.fixture(scope="module")
async def played(system: System) -> AsyncIterator[dict[str, Any]]:
    """Every scenario played at once, each on its own request."""
    start = await end_offsets([system.topic(t) for t in COURIER_TOPICS])
    async with httpx.AsyncClient(timeout=10) as http:
        sandbox = SandboxControl(http, system.url("sandbox"))
        names = list(SCENARIOS)
        rids = await asyncio.gather(*(
            start_request(http, system, sandbox, SCENARIOS[n][0],
                          scenario=None if SCENARIOS[n][1] else n, steps=SCENARIOS[n][1])
            for n in names
        ))
        boxes = await asyncio.gather(*(sandbox.wait_script_finished(r, 90) for r in rids))
        runs: dict[str, Any] = {}
        for name, rid, box in zip(names, rids, boxes, strict=True):
            shipment = (await http.get(f"{system.url('courier')}/shipments/{rid}")).json()
            runs[name] = Played(rid, SCENARIOS[name][0], shipment, box)
        yield {"start": start, "runs": runs, "http": http}


def anomalies(run: Played) -> list[str]:
    return [a["detail"] for a in run.shipment["anomalies"]]


@pytest.mark.parametrize(
    ("scenario", "expected", "status"),
    [
        ("cod_then_delivered", Counter({H: 1, C: 1, D: 1}), "completed"),
        ("delivered_then_cod", Counter({H: 1, C: 1, D: 1}), "completed"),
        ("failed_then_delivered", Counter({H: 1, F: 2, D: 1, C: 1}), "completed"),
        ("failed_then_returned", Counter({H: 1, F: 1, R: 1}), "returned_to_office"),
        ("wrong_cod_amount", Counter({H: 1, C: 1, D: 1}), "completed"),
        ("documents_not_collected", Counter({H: 1, C: 1, D: 1}), "completed"),
        ("duplicate_callbacks", Counter({H: 1, C: 1, D: 1}), "completed"),
        ("out_of_order", Counter({H: 1, C: 1, D: 1}), "completed"),
        ("late_failure_after_delivery", Counter({H: 1, C: 1, D: 1}), "completed"),
        ("forged_and_stale", Counter({H: 1, C: 1, D: 1}), "completed"),
        ("delivered_after_return", Counter({H: 1, R: 1}), "returned_to_office"),
        ("duplicate_returns", Counter({H: 1, R: 1}), "returned_to_office"),
    ],
)
async def test_each_path_emits_exactly_its_events(
    system: System, played: dict[str, Any], scenario: str, expected: Counter[str], status: str
) -> None:
    run: Played = played["runs"][scenario]
    events = await wait_events(system, played["start"], run.rid, expected)
    assert run.shipment["status"] == status
    waybill = run.shipment["waybill"]
    assert waybill == run.sandbox["waybill"]
    for event in events:
        assert event.producer == "courier" and str(event.request_id) == run.rid
        assert event.correlation_id == run.rid
        assert event.data.partner == run.partner and event.data.waybill == waybill
        assert event.causation_id.startswith(f"{run.partner}:")  # the partner's callback id
    # one event per partner callback at most: no callback caused two of the same kind
    assert len({(e.event_type, e.causation_id) for e in events}) == len(events)


async def test_failed_attempts_carry_their_reasons_and_numbers(
    system: System, played: dict[str, Any]
) -> None:
    run: Played = played["runs"]["failed_then_delivered"]
    events = await wait_events(system, played["start"], run.rid, Counter({H: 1, F: 2, D: 1, C: 1}))
    failures = sorted((e for e in events if e.event_type == F), key=lambda e: e.data.attempt)
    assert [(f.data.attempt, f.data.reason) for f in failures] == [
        (1, "Penerima tidak di tempat"), (2, "Alamat tidak ditemukan")]
    assert run.shipment["failed_attempts"] == 2
    assert run.shipment["last_failure_reason"] == "Alamat tidak ditemukan"

    returned: Played = played["runs"]["failed_then_returned"]
    (back,) = [e for e in await courier_events(system, played["start"], returned.rid)
               if e.event_type == R]
    assert back.data.reason == "Penerima menolak / tidak dapat dihubungi"
    assert returned.shipment["return_reason"] == back.data.reason
    assert returned.shipment["originals_status"] == "none"  # nothing handed over at a door


async def test_a_wrong_cod_amount_is_accepted_flagged_and_passed_on(
    system: System, played: dict[str, Any]
) -> None:
    run: Played = played["runs"]["wrong_cod_amount"]
    events = await wait_events(system, played["start"], run.rid, Counter({H: 1, C: 1, D: 1}))
    (paid,) = [e for e in events if e.event_type == C]
    assert paid.data.amount == 25_000  # the fact as the partner reported it, never corrected
    assert run.shipment["cod_amount_collected"] == 25_000
    assert "COD collected Rp 25000 differs from the fee Rp 20000" in anomalies(run)


async def test_out_of_order_callbacks_keep_the_real_times(
    system: System, played: dict[str, Any]
) -> None:
    run: Played = played["runs"]["out_of_order"]
    events = await wait_events(system, played["start"], run.rid, Counter({H: 1, C: 1, D: 1}))
    by_type = {e.event_type: e for e in events}
    assert by_type[H].data.handed_at <= by_type[D].data.delivered_at  # implied by the delivery
    assert anomalies(run) == ["delivered before any pickup scan"]
    shipment = run.shipment
    # the late pick-up scan (an hour before the delivery) corrects when the courier took it
    handed, delivered = (datetime.fromisoformat(shipment[k]) for k in ("handed_at", "delivered_at"))
    assert delivered - handed > timedelta(minutes=50)


async def test_duplicates_forgeries_and_late_facts_change_nothing(
    system: System, played: dict[str, Any]
) -> None:
    dup: Played = played["runs"]["duplicate_callbacks"]
    assert dup.sandbox["script"]["answers"] == [200, 200, 200]  # acknowledged, not re-applied
    assert all(c["times_received"] == 2 for c in dup.shipment["callbacks"])
    assert anomalies(dup) == []

    forged: Played = played["runs"]["forged_and_stale"]
    assert forged.sandbox["script"]["answers"] == [401, 401]
    assert len(forged.shipment["callbacks"]) == 3  # the forged and stale ones left no trace

    late: Played = played["runs"]["late_failure_after_delivery"]
    assert anomalies(late) == ["delivery failure reported after delivery"]
    assert late.shipment["failed_attempts"] == 0

    after_return: Played = played["runs"]["delivered_after_return"]
    assert anomalies(after_return) == [
        "delivered after the shipment was returned to the office",
        "cod_collected after the shipment was returned to the office",
    ]
    twice: Played = played["runs"]["duplicate_returns"]
    assert twice.shipment["callbacks"][1]["times_received"] == 2


async def test_originals_travel_back_until_the_office_confirms(
    system: System, played: dict[str, Any]
) -> None:
    http: httpx.AsyncClient = played["http"]
    courier = system.url("courier")
    run: Played = played["runs"]["cod_then_delivered"]
    view = (await http.get(f"{courier}/originals/{run.rid}")).json()
    assert view["status"] == "with_courier" and not view["overdue"]
    due = datetime.fromisoformat(view["due_at"]) - datetime.fromisoformat(view["delivered_at"])
    assert due == timedelta(days=7)
    assert [c["step"] for c in view["custody"]] == ["collected_at_door"]
    outstanding = (await http.get(f"{courier}/originals", params={"status": "outstanding"})).json()
    assert run.rid in {o["request_id"] for o in outstanding["originals"]}

    required = view["requirement_documents"]
    assert required
    r = await http.post(f"{courier}/originals/{run.rid}/received",
                        json={"received_by": "Bu Rina (loket)", "missing": ["not a document"]})
    assert r.status_code == 422
    r = await http.post(f"{courier}/originals/{run.rid}/received",
                        json={"received_by": "Bu Rina (loket)", "missing": required[:1]})
    assert r.status_code == 200 and r.json()["status"] == "received_incomplete"
    r = await http.post(f"{courier}/originals/{run.rid}/received",
                        json={"received_by": "Pak Joko (arsip)"})
    body = r.json()
    assert body["status"] == "received" and body["received_by"] == "Pak Joko (arsip)"
    assert [c["step"] for c in body["custody"]] == [
        "collected_at_door", "received_at_office", "received_at_office"]

    not_collected: Played = played["runs"]["documents_not_collected"]
    attention = (await http.get(f"{courier}/originals", params={"status": "attention"})).json()
    assert not_collected.rid in {o["request_id"] for o in attention["originals"]}
    assert not_collected.shipment["originals_status"] == "not_collected"


async def test_originals_not_back_in_time_are_overdue(system: System) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        sandbox = SandboxControl(http, system.url("sandbox"))
        eight_days_ago = -8 * 86400
        rid = await start_request(http, system, sandbox, "pos", steps=[
            {"kind": "picked_up", "occurred_offset_s": eight_days_ago - 3600},
            {"kind": "delivered", "occurred_offset_s": eight_days_ago},
            {"kind": "cod_collected", "occurred_offset_s": eight_days_ago},
        ])
        await sandbox.wait_script_finished(rid)
        overdue = (await http.get(f"{system.url('courier')}/originals",
                                  params={"status": "overdue"})).json()
    (mine,) = [o for o in overdue["originals"] if o["request_id"] == rid]
    assert mine["overdue"] and mine["status"] == "with_courier"
    assert 0.9 < mine["overdue_days"] < 1.1


async def test_service_levels_are_measured_and_late_requests_flagged(
    system: System, e2e_env: dict[str, str]
) -> None:
    """Ready -> handed -> delivered is measured; a request printed five days ago and still on its
    way is late, three days ago at risk (the clock is moved back in the courier's table)."""
    async with httpx.AsyncClient(timeout=10) as http:
        sandbox = SandboxControl(http, system.url("sandbox"))
        on_the_way = [{"kind": "picked_up"}]
        late, at_risk, done = await asyncio.gather(
            start_request(http, system, sandbox, "jnt", steps=on_the_way),
            start_request(http, system, sandbox, "pos", steps=on_the_way),
            start_request(http, system, sandbox, "pos", scenario="cod_then_delivered"),
        )
        for rid in (late, at_risk, done):
            await sandbox.wait_script_finished(rid)
        conn = await asyncpg.connect(e2e_env["DATABASE_URL"])
        try:
            for rid, days in ((late, 5), (at_risk, 3)):
                await conn.execute(
                    "UPDATE courier.shipments SET printed_at = printed_at - make_interval(days => $2)"
                    " WHERE request_id = $1", uuid.UUID(rid), days)
        finally:
            await conn.close()
        courier = system.url("courier")
        flagged = {
            state: {s["request_id"] for s in (await http.get(
                f"{courier}/service-levels/late", params={"state": state})).json()["requests"]}
            for state in ("late", "at_risk")
        }
        shipment = (await http.get(f"{courier}/shipments/{late}")).json()
        today = datetime.now(timezone(timedelta(hours=7))).date().isoformat()  # the office's day
        figures = (await http.get(f"{courier}/service-levels",
                                  params={"from": today, "to": today})).json()
    assert late in flagged["late"] and late not in flagged["at_risk"]
    assert at_risk in flagged["at_risk"] and done not in flagged["late"] | flagged["at_risk"]
    assert shipment["service_level"]["state"] == "late" and shipment["service_level"]["late"]
    assert 23 < shipment["service_level"]["late_by_h"] < 25
    everyone = figures["all"]
    assert everyone["delivered"] >= 1 and everyone["on_time"] >= 1
    assert everyone["ready_to_handed"]["median_h"] is not None
    assert everyone["handed_to_delivered"]["median_h"] is not None


# --- refusals: a clear 4xx and no event ---------------------------------------------------------


def pos_callback(body: dict[str, Any], *, secret: str = DEV.pos_webhook_secret,
                 age_s: float = 0) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    msg_id, ts = str(body.get("id", "x")), int(time.time() - age_s)
    return ({"content-type": "application/json", "webhook-id": msg_id,
             "webhook-timestamp": str(ts),
             "webhook-signature": sign_standard(secret, msg_id, ts, raw)}, raw)


def jnt_callback(biz: str) -> tuple[dict[str, str], bytes]:
    return ({"content-type": "application/x-www-form-urlencoded",
             "digest": jnt_digest(biz, DEV.jnt_private_key),
             "timestamp": str(int(time.time() * 1000))},
            urlencode({"bizContent": biz}).encode())


async def test_refused_callbacks_get_a_clear_4xx_and_cause_no_event(system: System) -> None:
    start = await end_offsets([system.topic(t) for t in COURIER_TOPICS])
    now = datetime.now(UTC).isoformat()

    def pos_event(event_id: str, awb: str = "P999999999999") -> dict[str, Any]:
        return {"id": event_id, "awb": awb, "event": "delivered", "occurred_at": now,
                "received_by": "X", "documents_collected": True}

    tag = uuid.uuid4().hex[:8]
    scan = {"billCode": "JX0000000000", "details": [{"scanId": f"jnt-{tag}", "scanTypeCode": "10",
                                                      "scanTime": "2024-05-01 10:00:00"}]}
    cases: list[tuple[str, str, tuple[dict[str, str], bytes], int]] = [
        ("unknown waybill (Pos)", "pos", pos_callback(pos_event(f"u-{tag}")), 404),
        ("unknown waybill (J&T)", "jnt", jnt_callback(json.dumps(scan)), 404),
        ("bad signature", "pos", pos_callback(pos_event(f"s-{tag}"), secret="guess"), 401),
        ("replayed: old timestamp", "pos", pos_callback(pos_event(f"r-{tag}"), age_s=900), 401),
        ("malformed: no awb", "pos", pos_callback({"id": f"m-{tag}", "event": "delivered"}), 400),
        ("malformed: not JSON", "jnt", jnt_callback("{not json"), 400),
        ("oversized", "pos", pos_callback(pos_event(f"o-{tag}") | {"pad": "x" * 70_000}), 413),
        ("unknown partner", "dhl", pos_callback(pos_event(f"p-{tag}")), 404),
    ]
    async with httpx.AsyncClient(timeout=10) as http:
        for name, partner, (headers, body), status in cases:
            r = await http.post(f"{system.url('courier')}/webhooks/{partner}",
                                content=body, headers=headers)
            assert r.status_code == status, (name, r.text)
            assert r.headers["content-type"].startswith("application/problem+json"), name
            assert r.json()["title"], name
    await asyncio.sleep(2)  # anything wrongly written would be published by now
    records = await read_topics(start)
    assert not [r for r in records if tag.encode() in r.value], "a refused callback made an event"
