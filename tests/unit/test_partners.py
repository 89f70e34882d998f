"""Courier partner adapters and webhook signatures, against the in-process sandbox (no network)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from sandbox.settings import SandboxSettings
from sandbox.testing import SANDBOX_BASE_URL, ScriptedCourier, in_process_sandbox
from sandbox.world import World
from services.courier.partners import (
    JNT_ACK,
    Address,
    BookingRequest,
    JntPartner,
    PartnerError,
    PartnerEvent,
    PosPartner,
    WebhookRejected,
    build_partners,
)
from services.courier.partners.jnt import parse_jnt_callback
from shared.webhook_signing import (
    SignatureError,
    hmac_sha256_hex,
    jnt_digest,
    sign_meta,
    sign_standard,
    verify_jnt_digest,
    verify_meta_signature,
    verify_standard,
)

S = SandboxSettings(autoplay=False, seed=7)
JNT_URL = f"{SANDBOX_BASE_URL}/jnt"
POS_URL = f"{SANDBOX_BASE_URL}/pos"

ADDRESS = Address(
    street="Jl. Raya Jabon No. 12",
    rt_rw="003/005",
    kelurahan="Jabon",
    kecamatan="Mojoanyar",
    kabupaten_kota="Kabupaten Mojokerto",
    provinsi="Jawa Timur",
    postal_code="61364",
)


def request_for(order_ref: str, cod_amount: int = 20_000) -> BookingRequest:
    return BookingRequest(
        order_ref=order_ref,
        cod_amount=cod_amount,
        recipient_name="Siti Aminah",
        recipient_phone="+6281234567890",
        address=ADDRESS,
        item_description="Dokumen kependudukan: KTP-el",
    )


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts requests per path on their way to the sandbox."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)


UNUSED_HTTP = httpx.AsyncClient()  # parse_webhook does no I/O
COURIER = ScriptedCourier()  # reset per test by the fixture


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The sandbox in-process; its callbacks go to COURIER, which records them."""
    COURIER.calls.clear()
    async with in_process_sandbox(S, callback_transport=COURIER.transport) as pair:
        yield pair


def jnt(client: httpx.AsyncClient, **kw: object) -> JntPartner:
    args: dict[str, object] = {
        "api_account": S.jnt_api_account,
        "private_key": S.jnt_private_key,
        "customer_code": S.jnt_customer_code,
    }
    args |= kw
    return JntPartner(client, JNT_URL, timeout_s=2.0, **args)  # type: ignore[arg-type]


def pos(client: httpx.AsyncClient, **kw: object) -> PosPartner:
    args: dict[str, object] = {
        "client_id": S.pos_client_id,
        "client_secret": S.pos_client_secret,
        "webhook_secret": S.pos_webhook_secret,
    }
    args |= kw
    return PosPartner(client, POS_URL, timeout_s=2.0, **args)  # type: ignore[arg-type]


# --- signatures ---------------------------------------------------------------------------------


def test_meta_signature_round_trip() -> None:
    body = b'{"entry":[]}'
    header = sign_meta("app-secret", body)
    assert header == "sha256=" + hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    assert header == "sha256=" + hmac_sha256_hex(b"app-secret", body)
    assert verify_meta_signature("app-secret", body, header)
    assert not verify_meta_signature("app-secret", body + b" ", header)
    assert not verify_meta_signature("other", body, header)
    assert not verify_meta_signature("app-secret", body, None)
    assert not verify_meta_signature("app-secret", body, header.removeprefix("sha256="))


def test_standard_signature_matches_the_spec_formula() -> None:
    sig = sign_standard("secret", "msg_1", 1_700_000_000, b"{}")
    mac = hmac.new(b"secret", b"msg_1.1700000000.{}", hashlib.sha256).digest()
    assert sig == "v1," + base64.b64encode(mac).decode()
    key = base64.b64encode(b"raw-key").decode()
    assert sign_standard(f"whsec_{key}", "m", 1, b"x") == sign_standard("raw-key", "m", 1, b"x")


def test_verify_standard_accepts_any_of_several_signatures() -> None:
    now = 1_700_000_000
    good = sign_standard("s", "id", now, b"body")
    verify_standard("s", "id", str(now), f"v1,AAAA v1a,xyz {good}", b"body", now=now + 299)


@pytest.mark.parametrize(
    ("msg_id", "ts", "sig", "body", "reason"),
    [
        (None, "1700000000", "v1,x", b"b", "missing header webhook-id"),
        ("id", None, "v1,x", b"b", "missing header webhook-timestamp"),
        ("id", "1700000000", None, b"b", "missing header webhook-signature"),
        ("id", "soon", "v1,x", b"b", "invalid header webhook-timestamp"),
        ("id", "1699999000", "GOOD", b"b", "timestamp outside the 5-minute window"),
        ("id", "1700000000", "GOOD", b"tampered", "signature mismatch"),
        ("other-id", "1700000000", "GOOD", b"b", "signature mismatch"),
    ],
)
def test_verify_standard_reasons(
    msg_id: str | None, ts: str | None, sig: str | None, body: bytes, reason: str
) -> None:
    if sig == "GOOD":
        sig = sign_standard("s", "id", int(ts or 0), b"b")
    with pytest.raises(SignatureError) as caught:
        verify_standard("s", msg_id, ts, sig, body, now=1_700_000_000)
    assert caught.value.reason == reason


def test_jnt_digest_is_base64_md5_of_content_plus_key() -> None:
    expected = base64.b64encode(hashlib.md5(b'{"a":1}key').digest()).decode()
    assert jnt_digest('{"a":1}', "key") == expected
    assert verify_jnt_digest('{"a":1}', "key", expected)
    assert not verify_jnt_digest('{"a":2}', "key", expected)
    assert not verify_jnt_digest('{"a":1}', "key", None)


# --- booking round trips ------------------------------------------------------------------------


def test_booking_request_refuses_non_integer_money() -> None:
    with pytest.raises(TypeError):
        request_for("r", cod_amount=20000.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        request_for("r", cod_amount=True)
    with pytest.raises(ValueError):
        request_for("r", cod_amount=0)


async def test_jnt_booking_is_idempotent_on_order_ref(
    sandbox: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = sandbox
    partner = jnt(client)
    first = await partner.book(request_for("req-jnt-1"))
    again = await partner.book(request_for("req-jnt-1"))
    other = await partner.book(request_for("req-jnt-2"))
    assert first == again
    assert first.partner == "jnt" and first.order_ref == "req-jnt-1"
    assert first.waybill.startswith("JX") and len(first.waybill) == 12
    assert first.waybill[2:].isdigit()
    assert other.waybill != first.waybill
    world: World = app.state.world
    booked = world.state.shipments[first.waybill]
    assert booked.cod_amount == 20_000
    assert booked.booking["codInfo"] == {"codValue": "20000"}
    assert booked.booking["receiver"]["prov"] == "Jawa Timur"
    assert len(world.state.shipments) == 2


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"private_key": "wrong"}, "145003052"),
        ({"api_account": "someone"}, "145003050"),
        ({"customer_code": "OTHER"}, "145003051"),
    ],
)
async def test_jnt_wrong_credentials_are_permanent(
    sandbox: tuple[FastAPI, httpx.AsyncClient], kw: dict[str, str], code: str
) -> None:
    _, client = sandbox
    with pytest.raises(PartnerError) as caught:
        await jnt(client, **kw).book(request_for("req-x"))
    assert caught.value.transient is False
    assert code in caught.value.reason


async def test_jnt_cancel_before_and_after_pickup(
    sandbox: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = sandbox
    partner = jnt(client)
    booking = await partner.book(request_for("req-cancel"))
    await partner.cancel(booking.waybill)
    await partner.cancel(booking.waybill)  # cancelling twice is harmless
    world: World = app.state.world
    assert world.state.shipments[booking.waybill].status == "cancelled"

    picked = await partner.book(request_for("req-picked"))
    world.state.shipments[picked.waybill].status = "picked_up"
    with pytest.raises(PartnerError) as caught:
        await partner.cancel(picked.waybill)
    assert not caught.value.transient
    with pytest.raises(PartnerError) as unknown:
        await partner.cancel("JX0000000000")
    assert not unknown.value.transient


async def test_pos_booking_is_idempotent_and_token_is_cached(
    sandbox: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, _ = sandbox
    counting = CountingTransport(httpx.ASGITransport(app=app))
    async with httpx.AsyncClient(transport=counting, base_url=SANDBOX_BASE_URL) as client:
        partner = pos(client)
        first = await partner.book(request_for("req-pos-1"))
        again = await partner.book(request_for("req-pos-1"))
        await partner.book(request_for("req-pos-2"))
    assert first == again
    assert first.waybill.startswith("P") and len(first.waybill) == 13
    assert counting.paths.count("/pos/oauth2/token") == 1
    world: World = app.state.world
    body = world.state.shipments[first.waybill].booking
    assert body["cod"] is True and body["codvalue"] == 20_000
    assert body["orderid"] == "req-pos-1" and body["receiverrtrw"] == "003/005"


async def test_pos_refreshes_token_once_on_401(sandbox: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, _ = sandbox
    counting = CountingTransport(httpx.ASGITransport(app=app))
    async with httpx.AsyncClient(transport=counting, base_url=SANDBOX_BASE_URL) as client:
        partner = pos(client)
        await partner.book(request_for("req-a"))
        # The sandbox forgets every token, as a partner does after a key rotation.
        await client.post("/sandbox/reset")
        await partner.book(request_for("req-b"))
    assert counting.paths.count("/pos/oauth2/token") == 2
    assert counting.paths.count("/pos/api/v1/orders") == 3


async def test_pos_token_renewed_before_expiry(sandbox: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, _ = sandbox
    now = [1000.0]
    counting = CountingTransport(httpx.ASGITransport(app=app))
    async with httpx.AsyncClient(transport=counting, base_url=SANDBOX_BASE_URL) as client:
        partner = pos(client, clock=lambda: now[0])
        await partner.book(request_for("req-a"))
        now[0] += 3600 - 61  # still valid and not in the renewal margin
        await partner.book(request_for("req-b"))
        now[0] += 2  # within the last minute: renew first
        await partner.book(request_for("req-c"))
    assert counting.paths.count("/pos/oauth2/token") == 2


async def test_pos_wrong_client_secret_is_permanent(
    sandbox: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    with pytest.raises(PartnerError) as caught:
        await pos(client, client_secret="wrong").book(request_for("req-x"))
    assert not caught.value.transient
    assert "invalid_client" in caught.value.reason


async def test_pos_cancel(sandbox: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = sandbox
    partner = pos(client)
    booking = await partner.book(request_for("req-c"))
    await partner.cancel(booking.waybill)
    world: World = app.state.world
    assert world.state.shipments[booking.waybill].status == "cancelled"
    with pytest.raises(PartnerError) as caught:
        await partner.cancel("P000000000000")
    assert not caught.value.transient and "404" in caught.value.reason


@pytest.mark.parametrize("target", ["jnt", "pos"])
async def test_partner_outage_is_transient(
    sandbox: tuple[FastAPI, httpx.AsyncClient], target: str
) -> None:
    _, client = sandbox
    await client.post("/sandbox/faults", json={"target": target, "mode": "error"})
    partner = jnt(client) if target == "jnt" else pos(client)
    with pytest.raises(PartnerError) as caught:
        await partner.book(request_for("req-outage"))
    assert caught.value.transient and "503" in caught.value.reason
    await client.post("/sandbox/faults", json={"target": target, "mode": "ok"})
    assert (await partner.book(request_for("req-outage"))).waybill


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def raiser(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    return handle


@pytest.mark.parametrize(
    ("handler", "transient"),
    [
        (raiser(httpx.ReadTimeout("slow")), True),
        (raiser(httpx.ConnectTimeout("slow")), True),
        (raiser(httpx.ConnectError("refused")), True),
        (raiser(httpx.RemoteProtocolError("eof")), True),
        (lambda r: httpx.Response(502, text="<html>Bad Gateway</html>"), True),
        (lambda r: httpx.Response(429), True),
        (lambda r: httpx.Response(200, text="<html>maintenance</html>"), True),
        (lambda r: httpx.Response(400), False),
        (lambda r: httpx.Response(200, json={"code": "145003060", "msg": "bad cod"}), False),
    ],
)
async def test_jnt_error_mapping(
    handler: Callable[[httpx.Request], httpx.Response], transient: bool
) -> None:
    async with mock_client(handler) as client:
        partner = JntPartner(client, "http://jnt.test", "acct", "key", 1.0)
        with pytest.raises(PartnerError) as caught:
            await partner.book(request_for("req"))
    assert caught.value.transient is transient
    assert caught.value.partner == "jnt"


@pytest.mark.parametrize(
    ("order_status", "transient"),
    [(500, True), (503, True), (429, True), (400, False), (409, False), (422, False)],
)
async def test_pos_error_mapping(order_status: int, transient: bool) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(order_status, json={"error": "x", "message": "refused"})

    async with mock_client(handle) as client:
        partner = PosPartner(client, "http://pos.test", "id", "secret", "whsec", 1.0)
        with pytest.raises(PartnerError) as caught:
            await partner.book(request_for("req"))
    assert caught.value.transient is transient


async def test_pos_token_endpoint_down_is_transient() -> None:
    async with mock_client(lambda r: httpx.Response(503)) as client:
        partner = PosPartner(client, "http://pos.test", "id", "secret", "whsec", 1.0)
        with pytest.raises(PartnerError) as caught:
            await partner.book(request_for("req"))
    assert caught.value.transient


async def test_adapters_pass_explicit_timeouts() -> None:
    seen: list[dict[str, float | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={"code": "1", "data": {"billCode": "JX1"}})

    async with mock_client(handle) as client:
        await JntPartner(client, "http://jnt.test", "a", "k", 3.5).book(request_for("r"))
    assert seen[0]["read"] == 3.5 and seen[0]["connect"] == 3.5


def test_build_partners_keys_by_partner_name() -> None:
    partners = build_partners(
        httpx.AsyncClient(),
        jnt_base_url=JNT_URL,
        jnt_api_account="a",
        jnt_private_key="k",
        pos_base_url=POS_URL,
        pos_client_id="i",
        pos_client_secret="s",
        pos_webhook_secret="w",
    )
    assert set(partners) == {"jnt", "pos"}
    assert all(p.name == key for key, p in partners.items())


# --- webhooks: what the sandbox signs, the adapters accept ---------------------------------------


async def send_callbacks(
    client: httpx.AsyncClient, waybill: str, *kinds: str
) -> list[PartnerEvent]:
    """Have the sandbox send callbacks to COURIER, then parse what it received."""
    for kind in kinds:
        answer = await client.post(f"/sandbox/shipments/{waybill}/callbacks", json={"kind": kind})
        assert answer.json()["answer"]["status_code"] == 200
    partner = build_test_partner(waybill, client)
    events: list[PartnerEvent] = []
    for call in COURIER.calls:
        events += partner.parse_webhook(call.headers, call.body, time.time())
    return events


def build_test_partner(waybill: str, client: httpx.AsyncClient) -> JntPartner | PosPartner:
    return jnt(client) if waybill.startswith("JX") else pos(client)


@pytest.mark.parametrize("partner_name", ["jnt", "pos"])
async def test_parse_webhook_accepts_what_the_partner_signs(
    partner_name: str, sandbox: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    _, client = sandbox
    partner = jnt(client) if partner_name == "jnt" else pos(client)
    booking = await partner.book(request_for(f"req-{partner_name}"))
    kinds = ["picked_up", "in_transit", "cod_collected", "delivered"]
    events = await send_callbacks(client, booking.waybill, *kinds)
    assert [e.kind for e in events] == kinds
    assert all(e.partner == partner_name and e.waybill == booking.waybill for e in events)
    assert all(e.partner_event_id.startswith(f"{partner_name}:") for e in events)
    assert len({e.partner_event_id for e in events}) == 4
    assert all(e.occurred_at.tzinfo is not None for e in events)
    assert all(abs((datetime.now(UTC) - e.occurred_at).total_seconds()) < 5 for e in events)
    cod, delivered = events[2], events[3]
    assert cod.cod_amount == 20_000 and isinstance(cod.cod_amount, int)
    assert delivered.received_by == "Siti Aminah" and delivered.documents_collected is True


async def test_failed_and_returned_carry_reasons(
    sandbox: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = sandbox
    booking = await jnt(client).book(request_for("req-fail"))
    events = await send_callbacks(client, booking.waybill, "delivery_failed", "returned")
    assert [e.kind for e in events] == ["delivery_failed", "returned"]
    assert all(e.reason for e in events)


def jnt_form(biz: str) -> bytes:
    return urlencode({"bizContent": biz}).encode()


def jnt_headers(biz: str, key: str = S.jnt_private_key, at: float | None = None) -> dict[str, str]:
    sent = time.time() if at is None else at
    return {"digest": jnt_digest(biz, key), "timestamp": str(int(sent * 1000))}


def pos_signed(body: bytes, secret: str = S.pos_webhook_secret, at: float | None = None) -> dict:
    ts = int(time.time() if at is None else at)
    return {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard(secret, "evt_1", ts, body),
    }


JNT_SCAN = json.dumps(
    {
        "billCode": "JX0000000001",
        "details": [
            {"scanId": "s1", "scanTime": "2026-11-22 10:00:00", "scanTypeCode": "10"},
            {"scanId": "s2", "scanTime": "2026-11-22 10:05:00", "scanTypeCode": "999"},
        ],
    }
)
POS_EVENT = json.dumps(
    {
        "id": "evt_1",
        "awb": "P000000000001",
        "event": "delivered",
        "occurred_at": "2026-11-22T10:00:00+07:00",
        "cod_amount": None,
        "received_by": "Siti",
        "documents_collected": True,
        "reason": None,
    }
).encode()


def test_jnt_scan_time_is_wib_and_unknown_codes_are_skipped() -> None:
    partner = JntPartner(UNUSED_HTTP, JNT_URL, "a", S.jnt_private_key)
    events = partner.parse_webhook(jnt_headers(JNT_SCAN), jnt_form(JNT_SCAN), time.time())
    assert len(events) == 1
    assert events[0].occurred_at == datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert events[0].partner_event_id == "jnt:s1"
    assert JNT_ACK == {"code": "1", "msg": "success", "data": "SUCCESS"}


def test_jnt_cod_amounts_are_whole_rupiah() -> None:
    def cod(value: object) -> dict[str, object]:
        detail = {"codId": "c1", "codValue": value, "payTime": "2026-11-22 10:00:00"}
        return {"billCode": "JX1", "codDetails": [detail]}

    assert parse_jnt_callback(cod("20000"))[0].cod_amount == 20_000
    assert parse_jnt_callback(cod("20000.00"))[0].cod_amount == 20_000
    for bad in ("20000.5", "dua puluh ribu", True, None):
        with pytest.raises(WebhookRejected) as caught:
            parse_jnt_callback(cod(bad))
        assert caught.value.status_code == 400


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        (jnt_headers(JNT_SCAN), jnt_form(JNT_SCAN.replace("10:00", "11:00")), 401, "digest"),
        (jnt_headers(JNT_SCAN, key="wrong"), jnt_form(JNT_SCAN), 401, "digest mismatch"),
        (jnt_headers(JNT_SCAN, at=time.time() - 600), jnt_form(JNT_SCAN), 401, "5-minute"),
        ({"timestamp": "1"}, jnt_form(JNT_SCAN), 401, "missing header digest"),
        (jnt_headers("{not json"), jnt_form("{not json"), 400, "not JSON"),
        (jnt_headers("[]"), jnt_form("[]"), 400, "object"),
        (jnt_headers('{"billCode":"X"}'), jnt_form('{"billCode":"X"}'), 400, "details"),
        (jnt_headers(JNT_SCAN), b"\xff\xfe", 400, "form"),
        (jnt_headers(JNT_SCAN), b"x" * 70_000, 413, "larger"),
    ],
)
def test_jnt_webhook_rejections(
    headers: dict[str, str], body: bytes, status: int, reason: str
) -> None:
    partner = JntPartner(UNUSED_HTTP, JNT_URL, "a", S.jnt_private_key)
    with pytest.raises(WebhookRejected) as caught:
        partner.parse_webhook(headers, body, time.time())
    assert caught.value.status_code == status
    assert reason in caught.value.reason


def test_pos_webhook_accepts_a_signed_event() -> None:
    partner = PosPartner(UNUSED_HTTP, POS_URL, "i", "s", S.pos_webhook_secret)
    [event] = partner.parse_webhook(pos_signed(POS_EVENT), POS_EVENT, time.time())
    assert event.kind == "delivered" and event.partner_event_id == "pos:evt_1"
    assert event.occurred_at == datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert event.received_by == "Siti" and event.documents_collected is True


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        (pos_signed(POS_EVENT), POS_EVENT.replace(b"Siti", b"Budi"), 401, "signature mismatch"),
        (pos_signed(POS_EVENT, secret="wrong"), POS_EVENT, 401, "signature mismatch"),
        (pos_signed(POS_EVENT, at=time.time() - 301), POS_EVENT, 401, "5-minute window"),
        ({}, POS_EVENT, 401, "missing header webhook-id"),
        (pos_signed(b"{oops"), b"{oops", 400, "not JSON"),
        (pos_signed(b'{"id":"e"}'), b'{"id":"e"}', 400, "missing awb"),
        (
            pos_signed(POS_EVENT.replace(b'"cod_amount": null', b'"cod_amount": 20000.0')),
            POS_EVENT.replace(b'"cod_amount": null', b'"cod_amount": 20000.0'),
            400,
            "cod_amount",
        ),
        (
            pos_signed(POS_EVENT.replace(b"+07:00", b"")),
            POS_EVENT.replace(b"+07:00", b""),
            400,
            "offset",
        ),
    ],
)
def test_pos_webhook_rejections(headers: dict, body: bytes, status: int, reason: str) -> None:
    partner = PosPartner(UNUSED_HTTP, POS_URL, "i", "s", S.pos_webhook_secret)
    with pytest.raises(WebhookRejected) as caught:
        partner.parse_webhook(headers, body, time.time())
    assert caught.value.status_code == status
    assert reason in caught.value.reason


def test_pos_unknown_event_is_acknowledged_without_events() -> None:
    body = POS_EVENT.replace(b'"delivered"', b'"weighed"')
    partner = PosPartner(UNUSED_HTTP, POS_URL, "i", "s", S.pos_webhook_secret)
    assert partner.parse_webhook(pos_signed(body), body, time.time()) == []


@pytest.mark.parametrize("partner_name", ["jnt", "pos"])
async def test_tampered_and_stale_callbacks_from_the_sandbox_are_rejected(
    partner_name: str, sandbox: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    _, client = sandbox
    partner = jnt(client) if partner_name == "jnt" else pos(client)
    booking = await partner.book(request_for("req-bad"))
    for flag in ("bad_signature", "stale_timestamp"):
        url = f"/sandbox/shipments/{booking.waybill}/callbacks"
        await client.post(url, json={"kind": "picked_up", flag: True})
    assert len(COURIER.calls) == 2
    for call in COURIER.calls:
        with pytest.raises(WebhookRejected) as caught:
            partner.parse_webhook(call.headers, call.body, time.time())
        assert caught.value.status_code == 401
