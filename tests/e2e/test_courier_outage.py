"""A partner outage: J&T answers 503, then hangs (our calls time out while J&T books anyway), then
comes back. Pos bookings go on meanwhile; every J&T booking made during the outage is placed once
J&T is back, none twice (the sandbox counts bookings per order ref)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import pytest

from deploy.local.system import System
from sandbox.testing import SandboxControl
from tests.e2e import flow
from tests.e2e.test_courier_lifecycles import eventually

pytestmark = pytest.mark.e2e

JNT_REQUESTS, POS_REQUESTS = 6, 3


async def request_printed(http: httpx.AsyncClient, system: System, partner: str) -> str:
    answer = await flow.register(http, system, flow.applicant_body(random.Random(), partner))
    rid = str(answer["request_id"])
    await flow.print_request(http, system, rid)
    return rid


async def shipments(http: httpx.AsyncClient, system: System, ids: list[str]) -> list[dict[str, Any]]:
    return [(await http.get(f"{system.url('courier')}/shipments/{rid}")).json() for rid in ids]


async def all_booked(http: httpx.AsyncClient, system: System, ids: list[str]) -> bool:
    return all(s.get("waybill") for s in await shipments(http, system, ids))


async def jnt_ops(http: httpx.AsyncClient, system: System) -> dict[str, Any]:
    r = await http.get(f"{system.url('courier')}/ops/booking")
    return dict(r.json()["partners"]["jnt"])


async def test_bookings_during_an_outage_are_all_placed_once_the_partner_is_back(
    system: System,
) -> None:
    figures: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=20) as http:
        sandbox = SandboxControl(http, system.url("sandbox"))
        await sandbox.fault("jnt", "error")  # 503 until told otherwise
        try:
            outage_started = time.monotonic()
            jnt_ids = list(await asyncio.gather(
                *(request_printed(http, system, "jnt") for _ in range(JNT_REQUESTS))))
            pos_ids = list(await asyncio.gather(
                *(request_printed(http, system, "pos") for _ in range(POS_REQUESTS))))

            # Pos is not held up by J&T
            await eventually(lambda: all_booked(http, system, pos_ids), 60)
            figures["pos_booked_during_outage_s"] = round(time.monotonic() - outage_started, 1)

            # J&T's bookings wait, visible to ops: the breaker, the queue, attempts, last error
            async def paused() -> dict[str, Any] | None:
                ops = await jnt_ops(http, system)
                return ops if ops["state"] != "closed" and ops["to_book"] >= JNT_REQUESTS else None

            ops = await eventually(paused, 60)
            assert "503" in ops["last_error"]
            waiting = (await http.get(f"{system.url('courier')}/shipments",
                                      params={"status": "to_book", "partner": "jnt",
                                              "limit": 1000})).json()["shipments"]
            assert set(jnt_ids) <= {s["request_id"] for s in waiting}
            tried = [s for s in waiting if s["request_id"] in jnt_ids and s["booking_attempts"]]
            assert tried and all("503" in s["booking_error"] for s in tried)
            figures["during_503"] = {"breaker": ops["state"], "to_book": ops["to_book"],
                                     "attempted": len(tried),
                                     "max_attempts": ops["max_attempts"]}

            # J&T hangs: a probe times out on our side, and J&T books it when it recovers
            await sandbox.fault("jnt", "timeout")

            async def timed_out() -> bool:
                return "timeout" in ((await jnt_ops(http, system))["last_error"] or "")

            await eventually(timed_out, 60)
        finally:
            await sandbox.fault("jnt", "ok")
        back = time.monotonic()
        await eventually(lambda: all_booked(http, system, jnt_ids), 60)
        figures["jnt_all_booked_after_recovery_s"] = round(time.monotonic() - back, 1)
        figures["outage_s"] = round(back - outage_started, 1)

        mine = await shipments(http, system, jnt_ids + pos_ids)
        placed = {rid: await sandbox.shipments(order_ref=rid) for rid in jnt_ids + pos_ids}
        after = await jnt_ops(http, system)

    # every booking placed exactly once, with the waybill the partner gave for that order
    for shipment in mine:
        (booking,) = placed[shipment["request_id"]]
        assert booking["waybill"] == shipment["waybill"]
        assert shipment["booking_error"] is None
    assert after["state"] == "closed" and after["to_book"] == 0
    attempts = sorted(s["booking_attempts"] for s in mine if s["partner"] == "jnt")
    assert attempts[-1] >= 2  # at least the timed-out one was retried, and deduplicated
    figures["jnt_attempts"] = attempts
    figures["bookings_per_order_ref"] = sorted({len(v) for v in placed.values()})
    print(f"\noutage figures: {figures}")
