"""The sandbox itself: autoplay, callback delivery with retries, faults, control endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aiohttp import web as aiohttp_web
from fastapi import FastAPI

from sandbox.settings import SandboxSettings
from sandbox.state import State
from sandbox.testing import (
    SANDBOX_BASE_URL,
    CourierCall,
    ScriptedCourier,
    always,
    fail_first,
    in_process_sandbox,
)
from sandbox.world import World
from services.courier.partners import (
    Address,
    BookingRequest,
    JntPartner,
    PartnerEvent,
    PosPartner,
    WebhookRejected,
)

FAST = {"step_delay_ms": 5, "retry_start_ms": 5, "retry_cap_ms": 40, "seed": 11}
ADDRESS = Address(
    "Jl. Pahlawan 5", "001/002", "Sooko", "Sooko", "Kab. Mojokerto", "Jawa Timur", "61361"
)


def booking(order_ref: str) -> BookingRequest:
    return BookingRequest(order_ref, 20_000, "Budi Santoso", "+6285712345678", ADDRESS, "KK")


def partner_for(
    name: str, client: httpx.AsyncClient, s: SandboxSettings
) -> JntPartner | PosPartner:
    if name == "jnt":
        url = f"{SANDBOX_BASE_URL}/jnt"
        account, key = s.jnt_api_account, s.jnt_private_key
        return JntPartner(client, url, account, key, customer_code=s.jnt_customer_code)
    return PosPartner(
        client,
        f"{SANDBOX_BASE_URL}/pos",
        s.pos_client_id,
        s.pos_client_secret,
        s.pos_webhook_secret,
    )


async def wait_until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


def events_of(calls: list[CourierCall], partner: JntPartner | PosPartner) -> list[PartnerEvent]:
    events: list[PartnerEvent] = []
    for call in calls:
        events += partner.parse_webhook(call.headers, call.body, time.time())
    return events


def world_of(app: FastAPI) -> World:
    world: World = app.state.world
    return world


async def test_health_and_reset() -> None:
    async with in_process_sandbox(SandboxSettings(autoplay=False)) as (_, client):
        health = (await client.get("/sandbox/health")).json()
        assert health["status"] == "ok" and health["shipments"] == 0
        await partner_for("jnt", client, SandboxSettings()).book(booking("r1"))
        assert (await client.get("/sandbox/health")).json()["shipments"] == 1
        assert (await client.post("/sandbox/reset")).status_code == 200
        assert (await client.get("/sandbox/shipments")).json()["count"] == 0


@pytest.mark.parametrize("partner_name", ["jnt", "pos"])
async def test_autoplay_retries_until_each_callback_is_delivered_once(partner_name: str) -> None:
    """The courier service answers 503 three times (down, then not ready), then 200."""
    courier = ScriptedCourier(fail_first(3, 503))
    settings = SandboxSettings(**FAST)
    async with in_process_sandbox(settings, courier.transport) as (app, client):
        partner = partner_for(partner_name, client, settings)
        waybill = (await partner.book(booking(f"auto-{partner_name}"))).waybill
        shipment = world_of(app).state.shipments[waybill]
        await wait_until(
            lambda: len(shipment.callbacks) == 3 and all(c.delivered for c in shipment.callbacks)
        )
        accepted = courier.accepted()
        assert len(accepted) == 3
        assert len(courier.calls) == 6  # 3 refused attempts of the first callback, then 3 accepted
        assert Counter(c.event_id for c in accepted).most_common(1)[0][1] == 1
        assert shipment.callbacks[0].attempts == 4
        # Every attempt, including retries, is freshly signed and verifies.
        events = events_of(courier.calls, partner)
        assert [e.kind for e in events[:4]] == ["picked_up"] * 4
        assert {e.kind for e in events[3:]} == {"picked_up", "cod_collected", "delivered"}
        assert len({e.partner_event_id for e in events}) == 3  # a retry keeps its event id
        cod = next(e for e in events if e.kind == "cod_collected")
        delivered = next(e for e in events if e.kind == "delivered")
        assert cod.cod_amount == 20_000
        assert delivered.received_by == "Budi Santoso" and delivered.documents_collected
        detail = (await client.get(f"/sandbox/shipments/{waybill}")).json()
        assert detail["status"] == "delivered"
        assert [c["delivered"] for c in detail["callbacks"]] == [True, True, True]


async def test_shipment_timings_tell_first_sends_and_answers_apart() -> None:
    """What the benchmark subtracts as the partner's own time: the first attempt's send and the
    2xx are recorded per callback, retries do not move the first send."""
    courier = ScriptedCourier(fail_first(2, 503))
    settings = SandboxSettings(**FAST)
    async with in_process_sandbox(settings, courier.transport) as (app, client):
        before = time.time()
        waybill = (await partner_for("jnt", client, settings).book(booking("timed"))).waybill
        shipment = world_of(app).state.shipments[waybill]
        await wait_until(lambda: len(shipment.callbacks) == 3
                         and all(c.delivered for c in shipment.callbacks))
        answer = (await client.get("/sandbox/shipments",
                                   params={"timings": "true", "booked_since": before})).json()
        (timed,) = answer["shipments"]
        assert timed["order_ref"] == "timed" and timed["booked_at_epoch"] >= before
        kinds = [kind for kind, _, _ in timed["callbacks"]]
        assert kinds[0] == "picked_up" and set(kinds) == {"picked_up", "cod_collected", "delivered"}
        since = timed["booked_at_epoch"]
        for _, first_sent, answered in timed["callbacks"]:
            assert since <= first_sent <= answered  # one after another, each sent then answered
            since = answered
        # the first callback was refused twice: its first send is before the retries' delays
        first_sent, answered = timed["callbacks"][0][1:]
        assert answered - first_sent >= 2 * 0.5 * FAST["retry_start_ms"] / 1000
        later = (await client.get("/sandbox/shipments",
                                  params={"timings": "true", "booked_since": time.time()})).json()
        assert later["count"] == 0


async def test_autoplay_survives_a_courier_that_is_down_then_unknown_waybill() -> None:
    def script(request: httpx.Request, n: int) -> int | Exception:
        if n < 2:
            return httpx.ConnectError("connection refused")
        return 404 if n < 4 else 200

    courier = ScriptedCourier(script)
    settings = SandboxSettings(**FAST)
    async with in_process_sandbox(settings, courier.transport) as (app, client):
        waybill = (await partner_for("pos", client, settings).book(booking("down"))).waybill
        shipment = world_of(app).state.shipments[waybill]
        await wait_until(
            lambda: world_of(app).pending_callbacks == 0 and len(shipment.callbacks) == 3
        )
        assert [c.status for c in courier.calls[:5]] == [None, None, 404, 404, 200]
        assert len(courier.accepted()) == 3


@pytest.mark.parametrize(
    ("order", "expected"),
    [("before", ["cod_collected", "delivered"]), ("after", ["delivered", "cod_collected"])],
)
async def test_cod_order(order: str, expected: list[str]) -> None:
    courier = ScriptedCourier()
    settings = SandboxSettings(**FAST, cod_order=order)
    async with in_process_sandbox(settings, courier.transport) as (app, client):
        waybill = (await partner_for("jnt", client, settings).book(booking("o"))).waybill
        shipment = world_of(app).state.shipments[waybill]
        await wait_until(lambda: len(courier.accepted()) == 3)
        assert [c.kind for c in shipment.callbacks] == ["picked_up", *expected]


async def test_random_cod_order_plays_both_orders() -> None:
    settings = SandboxSettings(**FAST)
    async with in_process_sandbox(settings) as (app, _):
        scripts = {tuple(world_of(app).life_script()) for _ in range(50)}
    assert scripts == {
        ("picked_up", "cod_collected", "delivered"),
        ("picked_up", "delivered", "cod_collected"),
    }


async def test_rebooking_does_not_replay_and_cancel_stops_the_life() -> None:
    courier = ScriptedCourier()
    settings = SandboxSettings(**(FAST | {"step_delay_ms": 100}))
    async with in_process_sandbox(settings, courier.transport) as (app, client):
        partner = partner_for("jnt", client, settings)
        first = await partner.book(booking("c"))
        await partner.book(booking("c"))
        await partner.cancel(first.waybill)
        await asyncio.sleep(0.25)
        assert courier.calls == []
        assert world_of(app).state.shipments[first.waybill].status == "cancelled"


async def test_manual_callbacks_report_the_courier_answer() -> None:
    courier = ScriptedCourier(always(200))
    settings = SandboxSettings(autoplay=False)
    async with in_process_sandbox(settings, courier.transport) as (_, client):
        waybill = (await partner_for("pos", client, settings).book(booking("m"))).waybill
        url = f"/sandbox/shipments/{waybill}/callbacks"
        answer = (await client.post(url, json={"kind": "cod_collected", "duplicate": True})).json()
        assert [a["status_code"] for a in answer["answers"]] == [200, 200]
        assert answer["callback"]["cod_amount"] == 20_000
        assert courier.calls[0].event_id == courier.calls[1].event_id
        assert courier.calls[0].body == courier.calls[1].body
        refused = await client.post(url, json={"kind": "exploded"})
        assert refused.status_code == 422
        missing = await client.post("/sandbox/shipments/P1/callbacks", json={"kind": "delivered"})
        assert missing.status_code == 404
        listing = (await client.get("/sandbox/shipments", params={"partner": "pos"})).json()
        assert listing["shipments"][0]["callbacks_delivered"] == 1


async def test_manual_callback_to_a_courier_that_is_down() -> None:
    courier = ScriptedCourier(always(503))
    settings = SandboxSettings(autoplay=False)
    async with in_process_sandbox(settings, courier.transport) as (_, client):
        waybill = (await partner_for("jnt", client, settings).book(booking("d"))).waybill
        url = f"/sandbox/shipments/{waybill}/callbacks"
        answer = (await client.post(url, json={"kind": "picked_up"})).json()
        assert answer["answer"]["status_code"] == 503
        assert answer["callback"]["delivered"] is False


async def test_fault_error_ends_after_its_seconds() -> None:
    async with in_process_sandbox(SandboxSettings(autoplay=False)) as (_, client):
        await client.post(
            "/sandbox/faults", json={"target": "pos", "mode": "error", "seconds": 0.1}
        )
        token_url = "/pos/oauth2/token"
        s = SandboxSettings()
        form = {"grant_type": "client_credentials"}
        auth = (s.pos_client_id, s.pos_client_secret)
        assert (await client.post(token_url, data=form, auth=auth)).status_code == 503
        await asyncio.sleep(0.15)
        assert (await client.post(token_url, data=form, auth=auth)).status_code == 200


async def test_fault_timeout_hangs_then_books_so_a_retry_gets_the_same_waybill() -> None:
    settings = SandboxSettings(autoplay=False)
    async with in_process_sandbox(settings) as (app, client):
        partner = partner_for("jnt", client, settings)
        await client.post(
            "/sandbox/faults", json={"target": "jnt", "mode": "timeout", "seconds": 0.3}
        )
        started = time.monotonic()
        hung = await partner.book(booking("slow"))
        assert time.monotonic() - started >= 0.25
        assert (await partner.book(booking("slow"))) == hung
        assert len(world_of(app).state.shipments) == 1


async def test_partner_apis_validate_like_the_partner() -> None:
    s = SandboxSettings(autoplay=False)
    async with in_process_sandbox(s) as (_, client):
        no_bearer = await client.post("/pos/api/v1/orders", json={})
        assert no_bearer.status_code == 401 and no_bearer.json()["error"] == "invalid_token"
        form = {"grant_type": "client_credentials"}
        token = (
            await client.post(
                "/pos/oauth2/token", data=form, auth=(s.pos_client_id, s.pos_client_secret)
            )
        ).json()
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        order = {
            "orderid": "x",
            "cod": False,
            "codvalue": 20000,
            "receivername": "A",
            "receiverphone": "+62812",
            "receiveraddress": "Jl",
            "receivercity": "K",
            "receiverzipcode": "6",
        }
        not_cod = await client.post("/pos/api/v1/orders", json=order, headers=bearer)
        assert not_cod.status_code == 400 and "cod" in not_cod.json()["message"]
        float_money = await client.post(
            "/pos/api/v1/orders", json=order | {"cod": True, "codvalue": 20000.0}, headers=bearer
        )
        assert float_money.status_code == 400
        created = await client.post(
            "/pos/api/v1/orders", json=order | {"cod": True}, headers=bearer
        )
        assert created.status_code == 201 and created.json()["awb"].startswith("P")
        again = await client.post("/pos/api/v1/orders", json=order | {"cod": True}, headers=bearer)
        assert again.status_code == 200 and again.json()["awb"] == created.json()["awb"]
        form_secret = form | {"client_id": s.pos_client_id, "client_secret": s.pos_client_secret}
        assert (await client.post("/pos/oauth2/token", data=form_secret)).status_code == 200
        wrong_grant = await client.post("/pos/oauth2/token", data={"grant_type": "password"})
        assert wrong_grant.status_code == 400

        missing = await client.post(
            "/jnt/api/order/addOrder", headers={"apiAccount": s.jnt_api_account}
        )
        assert missing.status_code == 200 and missing.json()["code"] != "1"


async def test_expired_pos_token_is_refused() -> None:
    s = SandboxSettings(autoplay=False, pos_token_ttl_s=1)
    async with in_process_sandbox(s) as (app, client):
        partner = partner_for("pos", client, s)
        await partner.book(booking("t1"))
        tokens = world_of(app).state.pos_tokens
        for token in tokens:
            tokens[token] = time.monotonic() - 1  # let it expire without waiting
        # The adapter's cached token is refused with 401; it fetches a new one and succeeds.
        await partner.book(booking("t2"))
        assert len(tokens) == 2


async def test_config_can_turn_autoplay_off_at_run_time() -> None:
    courier = ScriptedCourier()
    settings = SandboxSettings(**FAST)
    async with in_process_sandbox(settings, courier.transport) as (_, client):
        config = (await client.post("/sandbox/config", json={"autoplay": False})).json()
        assert config["autoplay"] is False
        await partner_for("jnt", client, settings).book(booking("quiet"))
        await asyncio.sleep(0.05)
        assert courier.calls == []


async def test_bad_signature_callback_is_rejected_by_the_adapter() -> None:
    courier = ScriptedCourier()
    settings = SandboxSettings(autoplay=False)
    async with in_process_sandbox(settings, courier.transport) as (_, client):
        partner = partner_for("jnt", client, settings)
        waybill = (await partner.book(booking("sig"))).waybill
        url = f"/sandbox/shipments/{waybill}/callbacks"
        await client.post(url, json={"kind": "delivered", "bad_signature": True})
        with pytest.raises(WebhookRejected):
            events_of(courier.calls, partner)


# --- scripted lives, settlement files ------------------------------------------------------------


def verifying(partner: JntPartner | PosPartner) -> Callable[[httpx.Request, int], int]:
    """A courier stand-in that checks signatures like the real one: 401 for a forged callback."""

    def answer(request: httpx.Request, _: int) -> int:
        try:
            partner.parse_webhook(dict(request.headers), request.content, time.time())
        except WebhookRejected as exc:
            return exc.status_code
        return 200

    return answer


@pytest.mark.parametrize("partner_name", ["jnt", "pos"])
async def test_a_script_registered_before_booking_plays_instead_of_autoplay(
    partner_name: str,
) -> None:
    settings = SandboxSettings(**FAST)
    courier = ScriptedCourier()
    async with in_process_sandbox(settings, courier.transport) as (app, client):
        partner = partner_for(partner_name, client, settings)
        courier.script = verifying(partner)
        steps = [
            {"kind": "delivered", "occurred_offset_s": -60, "received_by": "Ibu Sari"},
            {"kind": "delivered", "bad_signature": True},
            {"kind": "cod_collected", "cod_amount": 25_000, "duplicate": True},
            {"kind": "picked_up", "occurred_offset_s": -3600},
            {"kind": "delivery_failed", "stale_timestamp": True},
        ]
        r = await client.post("/sandbox/scripts", json={"order_ref": "s1", "steps": steps})
        assert r.status_code == 201 and r.json()["waybill"] is None
        waybill = (await partner.book(booking("s1"))).waybill
        shipment = world_of(app).state.shipments[waybill]
        await wait_until(lambda: shipment.script is not None and shipment.script.finished)
        summary = (await client.get("/sandbox/shipments", params={"order_ref": "s1"})).json()
    assert summary["shipments"][0]["script"]["answers"] == [401, 200, 401]
    assert [c.status for c in courier.calls] == [200, 401, 200, 200, 200, 401]  # no retries
    events = [e for c in courier.calls if c.status == 200
              for e in partner.parse_webhook(c.headers, c.body, time.time())]
    assert [e.kind for e in events] == ["delivered", "cod_collected", "cod_collected", "picked_up"]
    assert events[1].partner_event_id == events[2].partner_event_id  # the duplicate
    assert events[1].cod_amount == 25_000 and events[0].received_by == "Ibu Sari"
    assert events[3].occurred_at < events[0].occurred_at  # arrived last, happened first
    assert [c.applies for c in shipment.callbacks] == [True, False, True, True, False]


async def test_a_script_for_a_booked_shipment_plays_at_once_and_scenarios_are_listed() -> None:
    courier = ScriptedCourier()
    settings = SandboxSettings(**(FAST | {"autoplay": False}))
    async with in_process_sandbox(settings, courier.transport) as (app, client):
        waybill = (await partner_for("pos", client, settings).book(booking("b1"))).waybill
        r = await client.post("/sandbox/scripts",
                              json={"order_ref": "b1", "scenario": "failed_then_returned"})
        assert r.json()["waybill"] == waybill
        shipment = world_of(app).state.shipments[waybill]
        await wait_until(lambda: shipment.script is not None and shipment.script.finished)
        assert [c.kind for c in shipment.callbacks] == ["picked_up", "delivery_failed", "returned"]
        listed = (await client.get("/sandbox/scenarios")).json()["scenarios"]
        assert {"out_of_order", "wrong_cod_amount", "duplicate_callbacks"} <= set(listed)
        bad = await client.post("/sandbox/scripts", json={"order_ref": "x", "scenario": "nope"})
        assert bad.status_code == 422
        both = await client.post("/sandbox/scripts",
                                 json={"order_ref": "x", "scenario": "no_cod", "steps": []})
        assert both.status_code == 422


async def test_settlement_file_lists_each_collection_of_the_day_once() -> None:
    courier = ScriptedCourier()
    settings = SandboxSettings(autoplay=False)
    day, other_day = "2024-05-01T13:00:00+07:00", "2024-05-02T01:00:00+07:00"
    async with in_process_sandbox(settings, courier.transport) as (_, client):
        jnt = partner_for("jnt", client, settings)
        first = (await jnt.book(booking("p1"))).waybill
        second = (await jnt.book(booking("p2"))).waybill
        cb = "/sandbox/shipments/{}/callbacks"
        await client.post(cb.format(first), json={"kind": "cod_collected", "duplicate": True,
                                                  "occurred_at": day})
        await client.post(cb.format(second), json={"kind": "cod_collected", "cod_amount": 25_000,
                                                   "occurred_at": day})
        await client.post(cb.format(second), json={"kind": "cod_collected", "bad_signature": True,
                                                   "occurred_at": day})
        await client.post(cb.format(second), json={"kind": "cod_collected",
                                                   "occurred_at": other_day})
        text = (await client.get("/sandbox/settlements/jnt", params={"date": "2024-05-01"})).text
        pos_text = (await client.get("/sandbox/settlements/pos",
                                     params={"date": "2024-05-01"})).text
    assert text.splitlines() == [
        "billCode,txlogisticId,codValue,payTime",
        f"{first},p1,20000,2024-05-01 13:00:00",
        f"{second},p2,25000,2024-05-01 13:00:00",
    ]
    assert pos_text.splitlines() == ["awb,orderid,codvalue,paid_at"]


# --- callbacks over TCP (the sandbox's own connection pool), message polling -------------------


@contextlib.asynccontextmanager
async def tcp_courier(
    answer: Callable[[aiohttp_web.Request, int], aiohttp_web.Response],
) -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    """A courier stand-in on a real socket: its base URL and every (path, headers, body) POSTed."""
    received: list[tuple[str, dict[str, str], bytes]] = []

    async def webhook(request: aiohttp_web.Request) -> aiohttp_web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        received.append((request.path, headers, await request.read()))
        return answer(request, len(received) - 1)

    app = aiohttp_web.Application()
    app.router.add_post("/webhooks/jnt", webhook)
    app.router.add_post("/webhooks/pos", webhook)
    runner = aiohttp_web.AppRunner(app)
    await runner.setup()
    site = aiohttp_web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/", received
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("partner_name", ["jnt", "pos"])
async def test_callbacks_over_tcp_are_signed_retried_and_answered_as_before(
    partner_name: str,
) -> None:
    """Without a ``callback_transport`` the sandbox POSTs on its own keep-alive aiohttp session:
    the partner's headers and body (they verify), a retry after a 503, the answer's JSON kept."""

    def answer(_: aiohttp_web.Request, n: int) -> aiohttp_web.Response:
        if n == 0:
            return aiohttp_web.json_response({"title": "not ready"}, status=503)
        return aiohttp_web.json_response({"status": "accepted", "n": n})

    async with tcp_courier(answer) as (url, received):
        settings = SandboxSettings(**FAST, courier_url=url)
        async with in_process_sandbox(settings) as (app, client):
            partner = partner_for(partner_name, client, settings)
            waybill = (await partner.book(booking(f"tcp-{partner_name}"))).waybill
            shipment = world_of(app).state.shipments[waybill]
            await wait_until(
                lambda: len(shipment.callbacks) == 3 and all(c.delivered for c in shipment.callbacks)
            )
            manual = (await client.post(f"/sandbox/shipments/{waybill}/callbacks",
                                        json={"kind": "in_transit"})).json()
    assert [path for path, _, _ in received] == [f"/webhooks/{partner_name}"] * 5
    events = [e for _, headers, body in received
              for e in partner.parse_webhook(headers, body, time.time())]
    assert [e.kind for e in events[:2]] == ["picked_up", "picked_up"]  # the retry: same event id
    assert events[0].partner_event_id == events[1].partner_event_id
    assert shipment.callbacks[0].attempts == 2 and shipment.callbacks[0].last_status == 200
    assert manual["answer"] == {"status_code": 200, "body": {"status": "accepted", "n": 4},
                                "error": None}


async def test_a_callback_to_a_courier_that_is_not_listening_reports_the_error() -> None:
    async with tcp_courier(lambda _r, _n: aiohttp_web.Response(text="ok")) as (url, _):
        pass  # the port is free again: connections are refused
    settings = SandboxSettings(autoplay=False, courier_url=url)
    async with in_process_sandbox(settings) as (_, client):
        waybill = (await partner_for("pos", client, settings).book(booking("refused"))).waybill
        answer = (await client.post(f"/sandbox/shipments/{waybill}/callbacks",
                                    json={"kind": "picked_up"})).json()
    assert answer["answer"]["status_code"] is None
    assert answer["answer"]["error"].startswith("ConnectError: ")  # named as httpx named it
    assert answer["callback"]["delivered"] is False and answer["callback"]["attempts"] == 1


async def test_a_text_answer_is_kept_as_text() -> None:
    async with tcp_courier(lambda _r, _n: aiohttp_web.Response(text="x" * 3000)) as (url, _):
        settings = SandboxSettings(autoplay=False, courier_url=url)
        async with in_process_sandbox(settings) as (_, client):
            waybill = (await partner_for("jnt", client, settings).book(booking("t"))).waybill
            answer = (await client.post(f"/sandbox/shipments/{waybill}/callbacks",
                                        json={"kind": "picked_up"})).json()["answer"]
    assert answer["status_code"] == 200 and answer["body"] == "x" * 2000


def test_message_polls_find_what_a_scan_finds() -> None:
    """Indexed by recipient and bisected on time, a poll answers what filtering every message
    would, the wall clock stepping back included."""
    state = State()
    rng = random.Random(5)
    epoch = 1_700_000_000.0
    for n in range(300):
        epoch += rng.choice([0.0, 0.001, 0.5])
        if n == 200:
            epoch -= 3.0  # the clock stepped back
        wa_id = f"6281{rng.randrange(10)}"
        state.add_message({"id": n, "wa_id": wa_id, "received_at_epoch": epoch})
        if n in (10, 199, 299):
            for since in [None, epoch - 1.0, epoch, epoch + 1, float("nan"), float("-inf")]:
                for to in [None, wa_id, "62000"]:
                    scan = [m for m in state.messages
                            if (to is None or m["wa_id"] == to)
                            and (since is None or m["received_at_epoch"] >= since)]
                    assert state.find_messages(to, since) == scan, (n, since, to)
    assert not state.messages_in_time_order


async def test_polling_messages_since_and_to() -> None:
    async with in_process_sandbox(SandboxSettings(autoplay=False)) as (app, client):
        state = world_of(app).state
        for n, (wa_id, epoch) in enumerate([("6281", 10.0), ("6282", 20.0), ("6281", 30.0)]):
            state.add_message({"id": n, "wa_id": wa_id, "received_at_epoch": epoch})

        async def ids(**params: str) -> list[int]:
            answer = (await client.get("/sandbox/whatsapp/messages", params=params)).json()
            assert answer["count"] == len(answer["messages"])
            return [m["id"] for m in answer["messages"]]

        assert await ids() == [0, 1, 2]
        assert await ids(since="20") == [1, 2]
        assert await ids(since="20.5", to="+6281") == [2]
        assert await ids(to=" 6282") == [1]
        assert await ids(since="1970-01-01T00:00:15Z") == [1, 2]
        assert await ids(since="31") == []
        # only the fields asked for (the benchmark's poll); a missing one is null
        slim = (await client.get("/sandbox/whatsapp/messages",
                                 params={"since": "30", "fields": "id, received_at_epoch,x"})).json()
        assert slim == {"count": 1, "messages": [{"id": 2, "received_at_epoch": 30.0, "x": None}]}
        await client.post("/sandbox/reset")
        assert await ids() == []


async def test_hot_routes_answer_as_fastapi_routing_does() -> None:
    """The partner endpoints served past FastAPI's routing (sandbox/app.py) answer every request
    (accepted, refused, wrong method or path) with the status, headers and body FastAPI gives."""
    wa = "/whatsapp/v21.0/100000000000001/messages"
    auth = {"authorization": "Bearer wa-dev-access-token"}
    text = {"messaging_product": "whatsapp", "to": "+6281", "text": {"body": "hi"}}
    pos_order = {"orderid": "p1", "receivername": "S", "receiverphone": "1",
                 "receiveraddress": "a", "receivercity": "c", "receiverzipcode": "6",
                 "cod": True, "codvalue": 20000}
    token_form = "grant_type=client_credentials&client_id=ketanmu-dev&client_secret="
    requests: list[tuple[str, str, dict[str, object]]] = [
        ("POST", wa, {"json": text, "headers": auth}),
        ("POST", wa, {"json": text}),
        ("POST", wa, {"content": b"not json", "headers": auth}),
        ("POST", "/whatsapp/v21/100000000000001/messages", {"json": text, "headers": auth}),
        ("POST", "/whatsapp/v21.0/%20x/messages", {"json": text, "headers": auth}),
        ("POST", "/whatsapp/v21.0/1%2F2/messages", {"json": text, "headers": auth}),
        ("POST", wa + "/", {"json": text, "headers": auth}),
        ("GET", wa, {"headers": auth}),
        ("POST", "/jnt/api/order/addOrder", {"content": b"bizContent=x"}),
        ("PUT", "/jnt/api/order/addOrder", {}),
        ("POST", "/pos/oauth2/token", {"content": token_form + "pos-dev-client-secret"}),
        ("POST", "/pos/oauth2/token", {"content": token_form + "wrong"}),
        ("POST", "/pos/api/v1/orders", {"json": pos_order, "headers": {"authorization": "x"}}),
        ("POST", "/pos/api/v1/orders", {"json": pos_order, "headers": {"authorization": "TOKEN"}}),
        ("POST", "/pos/api/v1/orders", {"json": pos_order, "headers": {"authorization": "TOKEN"}}),
        ("POST", "/pos/api/v1/orders", {"content": b"[", "headers": {"authorization": "TOKEN"}}),
        ("POST", "/sandbox/faults", {"json": {"target": "whatsapp", "mode": "error"}}),
        ("POST", wa, {"json": text, "headers": auth}),
    ]

    async def answers(hot: bool) -> list[tuple[int, list[tuple[str, str]], bytes]]:
        seen = []
        async with in_process_sandbox(SandboxSettings(autoplay=False, seed=3)) as (app, client):
            assert len(app.hot_routes) == 4
            if not hot:
                app.hot_routes.clear()  # FastAPI routes them, as any other request
            token = ""
            for method, path, kwargs in requests:
                headers = kwargs.get("headers")
                if isinstance(headers, dict) and headers.get("authorization") == "TOKEN":
                    kwargs = kwargs | {"headers": {"authorization": f"Bearer {token}"}}
                r = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
                if path.endswith("/token") and r.status_code == 200:
                    token = r.json()["access_token"]
                seen.append((r.status_code, sorted(r.headers.items()), r.content))
        return seen

    hot, routed = await answers(hot=True), await answers(hot=False)
    assert [status for status, _, _ in hot] == [
        200, 401, 400, 400, 400, 404, 307, 405, 200, 405, 200, 401, 401, 201, 200, 400, 200, 503
    ]
    assert hot == routed
