"""What ops do with shipments: a refused booking waits for them and is placed on retry; a
shipment is cancelled before pick-up (at the partner too), never after."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from deploy.local.system import System
from sandbox.testing import SandboxControl
from tests.e2e import flow
from tests.e2e.test_courier_lifecycles import eventually

pytestmark = pytest.mark.e2e


async def registered(http: httpx.AsyncClient, system: System, partner: str,
                     steps: list[dict[str, Any]] | None = None) -> str:
    answer = await flow.register(http, system, flow.applicant_body(random.Random(), partner))
    rid = str(answer["request_id"])
    if steps is not None:
        await SandboxControl(http, system.url("sandbox")).script(rid, steps=steps)
    return rid


async def shipment_in(http: httpx.AsyncClient, system: System, rid: str,
                      statuses: set[str]) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        r = await http.get(f"{system.url('courier')}/shipments/{rid}")
        body = r.json() if r.status_code == 200 else {}
        return body if body.get("status") in statuses else None

    return dict(await eventually(reached, 60))


async def test_a_refused_booking_waits_for_ops_and_is_placed_on_retry(system: System) -> None:
    courier = system.url("courier")
    async with httpx.AsyncClient(timeout=10) as http:
        sandbox = SandboxControl(http, system.url("sandbox"))
        await sandbox.fault("jnt", "refuse")
        try:
            rid = await registered(http, system, "jnt", steps=[])
            await flow.print_request(http, system, rid)
            failed = await shipment_in(http, system, rid, {"booking_failed"})
            ops = (await http.get(f"{courier}/ops/booking")).json()["partners"]["jnt"]
        finally:
            await sandbox.fault("jnt", "ok")
        retried = await http.post(f"{courier}/shipments/{rid}/retry-booking", json={"by": "ops"})
        booked = await shipment_in(http, system, rid, {"booked"})
        placed = await sandbox.shipments(order_ref=rid)
        again = await http.post(f"{courier}/shipments/{rid}/retry-booking", json={"by": "ops"})
    assert "refused" in failed["booking_error"] and failed["booking_attempts"] == 1
    assert ops["booking_failed"] >= 1 and ops["state"] == "closed"  # a refusal is not an outage
    assert retried.status_code == 200 and retried.json()["status"] == "to_book"
    assert booked["booking_error"] is None and booked["booking_attempts"] == 2
    assert [p["waybill"] for p in placed] == [booked["waybill"]]
    assert again.status_code == 409  # booked: nothing to retry


async def test_cancel_before_pickup_also_at_the_partner_and_never_after(system: System) -> None:
    courier = system.url("courier")
    async with httpx.AsyncClient(timeout=10) as http:
        sandbox = SandboxControl(http, system.url("sandbox"))
        waiting, picked, unprinted = await asyncio.gather(
            registered(http, system, "pos", steps=[]),
            registered(http, system, "jnt", steps=[{"kind": "picked_up"}]),
            registered(http, system, "jnt"),
        )
        await asyncio.gather(flow.print_request(http, system, waiting),
                             flow.print_request(http, system, picked))
        booked = await shipment_in(http, system, waiting, {"booked"})
        await sandbox.wait_script_finished(picked)
        await shipment_in(http, system, unprinted, {"awaiting_print"})

        cancel = {"by": "ops", "reason": "pemohon mengambil sendiri di loket"}
        done = await http.post(f"{courier}/shipments/{waiting}/cancel", json=cancel)
        too_late = await http.post(f"{courier}/shipments/{picked}/cancel", json=cancel)
        early = await http.post(f"{courier}/shipments/{unprinted}/cancel", json=cancel)
        await flow.print_request(http, system, unprinted)  # printed after all: still not booked
        await asyncio.sleep(3)
        never_booked = await sandbox.shipments(order_ref=unprinted)
        at_partner = await sandbox.shipment(booked["waybill"])
        unprinted_now = (await http.get(f"{courier}/shipments/{unprinted}")).json()
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    assert "loket" in done.json()["cancel_reason"]
    assert at_partner["status"] == "cancelled"
    assert too_late.status_code == 409
    assert early.status_code == 200
    assert unprinted_now["status"] == "cancelled" and never_booked == []
