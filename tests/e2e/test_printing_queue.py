"""The operators' print queue against the running services: races, rejections, the queue itself."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import httpx
import pytest

from deploy.local.system import System
from shared.contracts import topics
from shared.contracts.events import parse_event
from tests.e2e import flow
from tests.e2e.test_courier_lifecycles import eventually
from tests.support.infra import end_offsets, read_topics

pytestmark = pytest.mark.e2e

OPERATORS = [f"operator-{n}" for n in range(8)]


async def queued_request(http: httpx.AsyncClient, system: System, partner: str = "pos") -> str:
    answer = await flow.register(http, system, flow.applicant_body(random.Random(), partner))
    rid = str(answer["request_id"])

    async def in_queue() -> bool:
        r = await http.get(f"{system.url('printing')}/print-jobs/{rid}")
        return r.status_code == 200

    await eventually(in_queue, 30)
    return rid


async def events_for(system: System, start: Any, rid: str, topic: str) -> list[Any]:
    records = await read_topics(start, key=rid.encode(), topics=[system.topic(topic)])
    return [parse_event(topic, r.value) for r in records]


async def test_operators_racing_to_claim_and_print_one_job_exactly_one_wins(
    system: System,
) -> None:
    printing = system.url("printing")
    start = await end_offsets([system.topic(topics.DOCUMENT_PRINTED)])
    async with httpx.AsyncClient(timeout=10) as http:
        rid = await queued_request(http, system)
        claims = await asyncio.gather(*(
            http.post(f"{printing}/print-jobs/{rid}/claim", json={"operator": op})
            for op in OPERATORS
        ))
        prints = await asyncio.gather(*(
            http.post(f"{printing}/print-jobs/{rid}/printed",
                      json={"document_number": f"3516-RACE-{rid[:8]}-{n}", "operator": op})
            for n, op in enumerate(OPERATORS)
        ))
        job = (await http.get(f"{printing}/print-jobs/{rid}")).json()

    assert Counter(r.status_code for r in claims) == {200: 1, 409: len(OPERATORS) - 1}
    (winner,) = [op for op, r in zip(OPERATORS, claims, strict=True) if r.status_code == 200]
    assert all(winner in r.json()["detail"] for r in claims if r.status_code == 409)
    assert Counter(r.status_code for r in prints) == {200: 1, 409: len(OPERATORS) - 1}
    (printed_by,) = [op for op, r in zip(OPERATORS, prints, strict=True) if r.status_code == 200]
    assert printed_by == winner
    assert job["status"] == "printed" and job["operator"] == winner
    outcomes = Counter((a["action"], a["outcome"]) for a in job["history"])
    assert outcomes == {("claim", "done"): 1, ("claim", "refused"): len(OPERATORS) - 1,
                        ("print", "done"): 1, ("print", "refused"): len(OPERATORS) - 1}

    async def one_event() -> list[Any]:
        return await events_for(system, start, rid, topics.DOCUMENT_PRINTED)

    (event,) = await eventually(one_event)
    await asyncio.sleep(1.0)
    assert len(await one_event()) == 1
    assert event.data.operator == winner


async def test_operators_printing_without_claiming_cannot_both_print(system: System) -> None:
    printing = system.url("printing")
    start = await end_offsets([system.topic(topics.DOCUMENT_PRINTED)])
    async with httpx.AsyncClient(timeout=10) as http:
        rid = await queued_request(http, system)
        prints = await asyncio.gather(*(
            http.post(f"{printing}/print-jobs/{rid}/printed",
                      json={"document_number": f"3516-DIRECT-{rid[:8]}-{n}", "operator": op})
            for n, op in enumerate(OPERATORS)
        ))
        # the winner's own retry (a lost answer) is a no-op, not a second document
        (winner,) = [(n, op) for n, (op, r) in enumerate(zip(OPERATORS, prints, strict=True))
                     if r.status_code == 200]
        again = await http.post(
            f"{printing}/print-jobs/{rid}/printed",
            json={"document_number": f"3516-DIRECT-{rid[:8]}-{winner[0]}", "operator": winner[1]})
        # a document number is used once only
        other = await queued_request(http, system)
        reused = await http.post(
            f"{printing}/print-jobs/{other}/printed",
            json={"document_number": f"3516-DIRECT-{rid[:8]}-{winner[0]}", "operator": "op-x"})
    assert Counter(r.status_code for r in prints) == {200: 1, 409: len(OPERATORS) - 1}
    assert again.status_code == 200
    assert reused.status_code == 409 and "number" in reused.json()["title"]

    async def printed() -> list[Any]:
        return await events_for(system, start, rid, topics.DOCUMENT_PRINTED)

    await eventually(printed)
    await asyncio.sleep(1.0)
    assert len(await printed()) == 1


async def test_release_and_rejection_with_a_reason_the_applicant_is_told(system: System) -> None:
    printing, courier = system.url("printing"), system.url("courier")
    start = await end_offsets([system.topic(topics.REQUEST_REJECTED)])
    async with httpx.AsyncClient(timeout=10) as http:
        body = flow.applicant_body(random.Random(), "jnt")
        answer = await flow.register(http, system, body)
        rid = str(answer["request_id"])
        await eventually(lambda: _has_job(http, printing, rid), 30)
        assert (await http.post(f"{printing}/print-jobs/{rid}/claim",
                                json={"operator": "ani"})).status_code == 200
        # someone else cannot reject or release a job Ani holds; Ani can release it
        taken = await http.post(f"{printing}/print-jobs/{rid}/reject",
                                json={"operator": "budi", "reason": "KK lama tidak terbaca"})
        assert taken.status_code == 409
        assert (await http.post(f"{printing}/print-jobs/{rid}/release",
                                json={"operator": "budi"})).status_code == 409
        released = await http.post(f"{printing}/print-jobs/{rid}/release", json={"operator": "ani"})
        assert released.json()["status"] == "queued"
        rejected = await http.post(
            f"{printing}/print-jobs/{rid}/reject",
            json={"operator": "budi", "reason_code": "missing_requirement",
                  "reason": "surat pengantar RT/RW belum dilampirkan"})
        assert rejected.status_code == 200 and rejected.json()["reject_code"] == "missing_requirement"
        late_print = await http.post(f"{printing}/print-jobs/{rid}/printed",
                                     json={"operator": "ani", "document_number": f"X-{rid[:8]}"})
        assert late_print.status_code == 409

        async def rejected_event() -> list[Any]:
            return await events_for(system, start, rid, topics.REQUEST_REJECTED)

        (event,) = await eventually(rejected_event)
        phone = _e164(body)

        async def told() -> list[dict[str, Any]]:
            messages = await flow.whatsapp_messages(http, system, phone)
            return [m for m in messages if m["template"] == "ketanmu_ditolak"]

        (message,) = await eventually(told)
        shipment = (await http.get(f"{courier}/shipments/{rid}")).json()
    assert event.data.operator == "budi"
    assert event.data.reason == (
        "berkas persyaratan belum lengkap: surat pengantar RT/RW belum dilampirkan")
    assert any("surat pengantar RT/RW" in p for p in message["params"])
    assert shipment["status"] == "awaiting_print"  # never booked


async def _has_job(http: httpx.AsyncClient, printing: str, rid: str) -> bool:
    return (await http.get(f"{printing}/print-jobs/{rid}")).status_code == 200


def _e164(body: dict[str, Any]) -> str:
    from services.intake.domain import normalize_phone

    return normalize_phone(body["applicant"]["phone"])


async def test_the_queue_lists_oldest_first_with_filters(system: System) -> None:
    printing = system.url("printing")
    async with httpx.AsyncClient(timeout=10) as http:
        first = await queued_request(http, system)
        second = await queued_request(http, system)
        queue = (await http.get(f"{printing}/print-jobs",
                                params={"status": "queued", "limit": 1000})).json()["jobs"]
        ids = [j["request_id"] for j in queue]
        assert ids.index(first) < ids.index(second)
        stamps = [j["registered_at"] for j in queue]
        assert stamps == sorted(stamps)
        await http.post(f"{printing}/print-jobs/{first}/claim", json={"operator": "citra"})
        mine = (await http.get(f"{printing}/print-jobs",
                               params={"status": "open", "claimed_by": "citra"})).json()["jobs"]
        assert [j["request_id"] for j in mine] == [first]
        assert mine[0]["claim_expires_at"] and not mine[0]["claim_expired"]
        doc_type = queue[ids.index(second)]["document_type"]
        typed = (await http.get(f"{printing}/print-jobs",
                                params={"document_type": doc_type, "limit": 1000})).json()["jobs"]
        assert second in {j["request_id"] for j in typed}
        assert {j["document_type"] for j in typed} == {doc_type}
        assert all("*" in j["applicant_nik"] for j in typed)  # NIK masked in the queue
