"""Intake as the front door, in process on real PostgreSQL and Kafka: registration, idempotency,
operators, tracking, capacity, the WhatsApp conversation and retention.

The app runs with its lifespan (migrations, relay, consumer, reply loop); WhatsApp replies go to
the in-process sandbox. Every log line the app writes is teed into a sink (``Intake.written``)
so the last test can prove no full NIK or phone number was written. (Loggers of ``shared``
modules that another test module used first keep that module's output: the e2e log scan, which
reads the service processes' files, covers those.)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import re
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from deploy.local.demo import sample_request
from sandbox.settings import SandboxSettings
from sandbox.testing import SANDBOX_BASE_URL, in_process_sandbox
from services.intake import events as intake_events
from services.intake.app import build
from services.intake.capacity import office_today
from services.intake.settings import DEV_OPERATOR_TOKEN, DEV_SUPERVISOR_TOKEN, IntakeSettings
from shared.contracts import topics
from shared.contracts.events import (
    Delivered,
    DocumentPrinted,
    new_event,
)
from shared.runtime import Runtime
from shared.webhook_signing import sign_meta
from shared.whatsapp.client import WhatsAppClient
from tests.support.infra import KAFKA, create_database, drop_database, dsn_for, seed_group_at_end

pytestmark = pytest.mark.integration

OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_TOKEN}"}
SUPERVISOR = {"Authorization": f"Bearer {DEV_SUPERVISOR_TOKEN}"}
APP_SECRET = "it-app-secret"
LIMITED_TYPE = "akta_perceraian"  # quota 2 a day in these tests; tomorrow closed


class _Tee(io.TextIOBase):
    def __init__(self, *targets: Any) -> None:
        self.targets = targets

    def write(self, text: str) -> int:
        for target in self.targets:
            target.write(text)
        return len(text)

    def flush(self) -> None:
        for target in self.targets:
            target.flush()


# One sink for the session: structlog caches each module's logger on first use with the output
# it was configured with, so every in-process intake must be configured with the same one.
_SINK = io.StringIO()
_TEE: _Tee | None = None


def _tee() -> _Tee:
    global _TEE
    if _TEE is None:
        _TEE = _Tee(sys.stdout, _SINK)
    return _TEE


@dataclass
class Intake:
    app: FastAPI
    http: httpx.AsyncClient
    sandbox: httpx.AsyncClient
    settings: IntakeSettings
    log_start: int
    # every NIK and phone number the tests sent, for the log scan
    secrets: set[str] = field(default_factory=set)

    def written(self) -> str:
        """What this intake's loggers wrote since it started."""
        return _SINK.getvalue()[self.log_start :]

    @property
    def rt(self) -> Runtime:
        return self.app.state.rt  # type: ignore[no-any-return]

    def body(self, rng: random.Random | None = None, **changes: Any) -> dict[str, Any]:
        body = sample_request(rng or random.Random())
        body["document_type"] = changes.pop("document_type", "ktp_el")
        for path, value in changes.items():
            target = body
            *parents, leaf = path.split("__")
            for p in parents:
                target = target[p]
            target[leaf] = value
        self.remember(body)
        return body

    def remember(self, body: dict[str, Any]) -> None:
        applicant = body.get("applicant", {})
        for key in ("nik", "phone"):
            if isinstance(applicant.get(key), str):
                self.secrets.add(applicant[key])

    async def register(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.http.post("/requests", json=body, headers=headers)

    async def webhook(self, payload: dict[str, Any], secret: str = APP_SECRET) -> httpx.Response:
        raw = json.dumps(payload).encode()
        return await self.http.post(
            "/webhooks/whatsapp",
            content=raw,
            headers={"content-type": "application/json", "X-Hub-Signature-256": sign_meta(secret, raw)},
        )

    async def replies(self, wa_id: str, at_least: int, timeout_s: float = 15.0) -> list[str]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            r = await self.sandbox.get("/sandbox/whatsapp/messages", params={"to": wa_id})
            texts = [m["text"] for m in r.json()["messages"]]
            if len(texts) >= at_least:
                return texts
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"only {len(texts)} replies to {wa_id}: {texts}")
            await asyncio.sleep(0.1)

    async def fetch(self, sql: str, *args: Any) -> Any:
        async with self.rt.pool.acquire() as conn:
            return await conn.fetch(sql, *args)


def wa_message(wa_id: str, text: str | None, wamid: str | None = None, kind: str = "text",
               phone_number_id: str = "100000000000001") -> dict[str, Any]:
    message: dict[str, Any] = {"from": wa_id, "id": wamid or f"wamid.{uuid.uuid4().hex}",
                               "timestamp": str(int(datetime.now(UTC).timestamp())), "type": kind}
    if kind == "text":
        message["text"] = {"body": text}
    elif kind == "image":
        message["image"] = {"id": "media-1", "mime_type": "image/jpeg"}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "waba", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "6281100000000", "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": "Pemohon"}, "wa_id": wa_id}],
            "messages": [message],
        }}]}],
    }


@contextlib.asynccontextmanager
async def running_intake(ns: str, **overrides: Any) -> AsyncIterator[Intake]:
    database = await create_database("ketanmu_intake_it")
    zone_today = office_today(datetime.now(UTC), IntakeSettings().zone)
    settings = IntakeSettings(
        database_url=dsn_for(database),
        kafka_bootstrap_servers=KAFKA,
        kafka_group_prefix=f"{ns}intake-{uuid.uuid4().hex[:6]}-",
        kafka_topic_prefix=ns,
        whatsapp_base_url=f"{SANDBOX_BASE_URL}/whatsapp",
        whatsapp_app_secret=APP_SECRET,
        daily_quota={LIMITED_TYPE: 2},
        quota_overrides={zone_today + timedelta(days=1): {LIMITED_TYPE: 0}},
        tracking_max_failures_per_client=1000,
        outbox_poll_interval_s=0.2,
        **overrides,
    )
    # the consumer reads only what comes after this point: other tests' events stay out
    await seed_group_at_end(settings.consumer_group, [ns + t for t in topics.EVENT_TOPICS])
    log_start = len(_SINK.getvalue())
    with contextlib.redirect_stdout(_tee()):  # type: ignore[type-var]
        app = build(settings)
    async with (
        in_process_sandbox(SandboxSettings(autoplay=False)) as (_, sandbox),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake.test")
        as http,
    ):
        rt: Runtime = app.state.rt
        rt.extras["whatsapp"] = WhatsAppClient(
            sandbox, f"{SANDBOX_BASE_URL}/whatsapp", settings.whatsapp_phone_number_id,
            settings.whatsapp_access_token,
        )
        yield Intake(app, http, sandbox, settings, log_start)
    await drop_database(database)


@pytest.fixture(scope="module")
async def intake(ns: str) -> AsyncIterator[Intake]:
    async with running_intake(ns) as running:
        yield running


# ---- registration -----------------------------------------------------------------------


async def test_registration_normalises_and_emits_one_event(intake: Intake) -> None:
    body = intake.body(applicant__phone="+62 812-3456-7001", delivery__address__rt_rw="RT 3 RW 5",
                       delivery__address__kabupaten_kota="Kab. Mojokerto",
                       delivery__address__provinsi="jatim")
    r = await intake.register(body)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["cod_fee"] == 20_000 and answer["cod_fee_display"] == "Rp 20.000"
    assert answer["requirement_documents"] == [
        "KTP-el lama (asli) atau surat keterangan kehilangan dari kepolisian"
    ]
    assert r.headers["location"] == f"/requests/{answer['request_id']}"
    detail = (await intake.http.get(f"/requests/{answer['request_id']}", headers=OPERATOR)).json()
    assert detail["applicant"]["phone"] == "+6281234567001"
    assert detail["delivery"]["address"]["rt_rw"] == "003/005"
    assert detail["delivery"]["address"]["kabupaten_kota"] == "Kabupaten Mojokerto"
    assert detail["delivery"]["address"]["provinsi"] == "Jawa Timur"
    assert detail["channel"] == "web" and detail["intake_via"] == "web"
    assert [t["event"] for t in detail["timeline"]] == ["request-registered"]


async def test_the_fee_cannot_be_set_and_unknown_fields_are_named(intake: Intake) -> None:
    body = intake.body()
    body["cod_fee"] = 0
    body["applicant"]["nikk"] = "x"
    r = await intake.register(body)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    fields = {e["field"]: e["message"] for e in r.json()["errors"]}
    assert "ongkos kirim ditetapkan kantor" in fields["cod_fee"]
    assert fields["applicant.nikk"] == "kolom tidak dikenal / unknown field"


# ---- idempotency and the one-open-request rule ----------------------------------------------


async def test_the_same_key_and_body_answer_the_same(intake: Intake) -> None:
    body = intake.body()
    first = await intake.register(body, **{"Idempotency-Key": "k-same-1"})
    # the same request, the phone written another way: the same body once normalised
    body["applicant"]["phone"] = "+62 " + body["applicant"]["phone"][1:]
    again = await intake.register(body, **{"Idempotency-Key": "k-same-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    rows = await intake.fetch("SELECT 1 FROM requests WHERE tracking_code = $1",
                              first.json()["tracking_code"])  # fmt: skip
    assert len(rows) == 1


async def test_the_same_key_with_another_body_is_a_409(intake: Intake) -> None:
    body = intake.body()
    assert (await intake.register(body, **{"Idempotency-Key": "k-other-1"})).status_code == 201
    other = intake.body()
    r = await intake.register(other, **{"Idempotency-Key": "k-other-1"})
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_reused"
    nik = other["applicant"]["nik"]
    assert await intake.fetch("SELECT 1 FROM requests WHERE applicant_nik = $1", nik) == []


async def test_concurrent_retries_with_one_key_register_once(intake: Intake) -> None:
    body = intake.body()
    answers = await asyncio.gather(
        *(intake.register(body, **{"Idempotency-Key": "k-race-1"}) for _ in range(6))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["request_id"] for a in answers}) == 1
    nik = body["applicant"]["nik"]
    assert len(await intake.fetch("SELECT 1 FROM requests WHERE applicant_nik = $1", nik)) == 1


async def test_concurrent_requests_for_one_open_document_register_once(intake: Intake) -> None:
    body = intake.body()
    answers = await asyncio.gather(
        *(intake.register(body, **{"Idempotency-Key": f"k-open-{i}"}) for i in range(6))
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409, 409]
    refused = [a.json() for a in answers if a.status_code == 409]
    assert {p["code"] for p in refused} == {"open_request_exists"}
    winner = next(a.json() for a in answers if a.status_code == 201)
    assert {p["tracking_code"] for p in refused} == {winner["tracking_code"]}  # same phone


async def test_the_open_request_is_named_only_to_its_own_phone(intake: Intake) -> None:
    body = intake.body()
    assert (await intake.register(body)).status_code == 201
    other_phone = intake.body()
    other_phone["applicant"]["nik"] = body["applicant"]["nik"]
    r = await intake.register(other_phone)
    assert r.status_code == 409 and "tracking_code" not in r.json()
    assert "KTM-" not in r.text
    another_document = dict(body, document_type="kk")
    assert (await intake.register(another_document)).status_code == 201


async def test_a_finished_request_no_longer_blocks_a_new_one(intake: Intake) -> None:
    body = intake.body()
    first = (await intake.register(body)).json()
    await deliver(intake, first["request_id"])
    again = await intake.register(body)
    assert again.status_code == 201 and again.json()["request_id"] != first["request_id"]


async def test_an_invalid_idempotency_key_is_a_400(intake: Intake) -> None:
    for key in ["has space", "x" * 256]:
        r = await intake.register(intake.body(), **{"Idempotency-Key": key})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "Idempotency-Key"


async def deliver(intake: Intake, request_id: str) -> None:
    """Feed intake the printed and delivered events as its consumer would."""
    rid = uuid.UUID(request_id)
    now = datetime.now(UTC)
    printed = new_event(topics.DOCUMENT_PRINTED, request_id=rid, correlation_id=request_id,
                        causation_id="it", producer="printing",
                        data=DocumentPrinted(document_number="N-1", printed_at=now, operator="op"))
    delivered = new_event(topics.DELIVERED, request_id=rid, correlation_id=request_id,
                          causation_id="it", producer="courier",
                          data=Delivered(partner="jnt", waybill="JX0000000001", delivered_at=now,
                                         received_by="Siti", documents_collected=True))  # fmt: skip
    async with intake.rt.pool.acquire() as conn, conn.transaction():
        await intake_events.record_event(conn, printed)
        await intake_events.record_event(conn, delivered)


# ---- operators ------------------------------------------------------------------------------


async def test_operators_register_walk_ins_and_read_the_applicants_data(intake: Intake) -> None:
    body = intake.body() | {"via": "walk_in"}
    body.pop("channel")
    assert (await intake.http.post("/operator/requests", json=body)).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    r = await intake.http.post("/operator/requests", json=body, headers=bad)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = await intake.http.post("/operator/requests", json=body, headers=OPERATOR)
    assert r.status_code == 201, r.text
    rid = r.json()["request_id"]
    assert (await intake.http.get(f"/requests/{rid}")).status_code == 401
    detail = (await intake.http.get(f"/requests/{rid}", headers=OPERATOR)).json()
    assert detail["channel"] == "counter" and detail["intake_via"] == "walk_in"
    assert detail["registered_by"] == "dev-operator"
    assert detail["applicant"]["nik"] == body["applicant"]["nik"]
    audit = await intake.fetch("SELECT operator_id FROM personal_data_access WHERE request_id = $1",
                               uuid.UUID(rid))  # fmt: skip
    assert [a["operator_id"] for a in audit] == ["dev-operator"]
    listed = (await intake.http.get("/operator/requests", params={"tracking_code":
              r.json()["tracking_code"].lower()}, headers=OPERATOR)).json()["requests"]  # fmt: skip
    assert len(listed) == 1 and "*" in listed[0]["applicant_nik"]


async def test_roles(intake: Intake) -> None:
    r = await intake.http.post("/operator/retention/run", headers=OPERATOR)
    assert r.status_code == 403
    r = await intake.http.post("/operator/retention/run", headers=SUPERVISOR)
    assert r.status_code == 200 and "requests_erased" in r.json()


async def test_a_second_open_request_about_another_person_needs_an_operator(intake: Intake) -> None:
    first = intake.body(document_type="kia")
    assert (await intake.register(first)).status_code == 201
    twin = intake.body(document_type="kia")
    twin["applicant"] = first["applicant"]
    assert (await intake.register(twin)).status_code == 409
    twin.pop("channel")
    r = await intake.http.post("/operator/requests", headers=OPERATOR,
                               json=twin | {"via": "phone", "another_person": True})  # fmt: skip
    assert r.status_code == 201
    ktp = intake.body() | {"via": "phone", "another_person": True}
    ktp.pop("channel")
    r = await intake.http.post("/operator/requests", headers=OPERATOR, json=ktp)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "another_person"


async def test_the_environment_is_the_source_of_truth_for_operators(intake: Intake) -> None:
    from services.intake.auth import seed_operators
    from services.intake.settings import OperatorSeed

    token = "a-token-only-for-this-test"
    async with intake.rt.pool.acquire() as conn:
        await seed_operators(conn, [*intake.settings.intake_operators,
                                    OperatorSeed(id="temp", role="operator", token=token)])
        ok = await intake.http.get("/operator/capacity", headers={"Authorization": f"Bearer {token}"})
        await seed_operators(conn, intake.settings.intake_operators)
    gone = await intake.http.get("/operator/capacity", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and gone.status_code == 401


# ---- capacity -------------------------------------------------------------------------------


async def test_over_quota_the_applicant_is_told_the_next_day_with_room(intake: Intake) -> None:
    today = office_today(datetime.now(UTC), intake.settings.zone)
    for _ in range(2):
        assert (await intake.register(intake.body(document_type=LIMITED_TYPE))).status_code == 201
    r = await intake.register(intake.body(document_type=LIMITED_TYPE))
    problem = r.json()
    assert r.status_code == 409 and problem["code"] == "daily_quota_full"
    assert problem["service_date"] == today.isoformat()
    # tomorrow is closed for this type (QUOTA_OVERRIDES): the day after
    assert problem["next_available_date"] == (today + timedelta(days=2)).isoformat()
    assert int(r.headers["retry-after"]) > 86_400
    walk_in = intake.body(document_type=LIMITED_TYPE) | {"via": "walk_in"}
    walk_in.pop("channel")
    r = await intake.http.post("/operator/requests", json=walk_in, headers=OPERATOR)
    assert r.status_code == 201  # the counter is counted, never turned away
    day = (await intake.http.get("/operator/capacity", headers=OPERATOR)).json()
    limited = next(t for t in day["types"] if t["document_type"] == LIMITED_TYPE)
    assert limited == {"document_type": LIMITED_TYPE, "name": "Akta Perceraian", "quota": 2,
                       "used": 3, "room": 0}  # fmt: skip


# ---- public tracking ------------------------------------------------------------------------


async def test_tracking_shows_the_timeline_and_no_personal_data(intake: Intake) -> None:
    body = intake.body()
    answer = (await intake.register(body)).json()
    await deliver(intake, answer["request_id"])
    digits = body["applicant"]["phone"][-4:]
    r = await intake.http.get(f"/tracking/{answer['tracking_code']}", params={"phone_last4": digits})
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["status"] == "delivered" and view["cod_fee_display"] == "Rp 20.000"
    assert [s["event"] for s in view["timeline"]] == ["request-registered", "document-printed",
                                                      "delivered"]  # fmt: skip
    text = r.text
    for personal in (body["applicant"]["nik"], body["applicant"]["phone"][1:],
                     body["applicant"]["name"], body["delivery"]["address"]["street"]):
        assert personal not in text
    page = await intake.http.get("/lacak", params={"kode": answer["tracking_code"], "hp": digits})
    assert page.status_code == 200 and "Sudah diterima" in page.text
    assert body["applicant"]["name"] not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    form = await intake.http.get("/lacak")
    assert form.status_code == 200 and "<form" in form.text


async def test_wrong_codes_and_guesses_get_one_answer_and_are_limited(intake: Intake) -> None:
    body = intake.body()
    code = (await intake.register(body)).json()["tracking_code"]
    digits = body["applicant"]["phone"][-4:]
    wrong = "0000" if digits != "0000" else "1111"
    unknown = await intake.http.get("/tracking/KTM-0000-0000", params={"phone_last4": digits})
    guesses = [await intake.http.get(f"/tracking/{code}", params={"phone_last4": wrong})
               for _ in range(intake.settings.tracking_max_failures_per_code)]  # fmt: skip
    assert unknown.status_code == 404 and {g.status_code for g in guesses} == {404}
    assert unknown.json()["title"] == guesses[0].json()["title"]
    blocked = await intake.http.get(f"/tracking/{code}", params={"phone_last4": digits})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    page = await intake.http.get("/lacak", params={"kode": code, "hp": digits})
    assert page.status_code == 429 and "Terlalu banyak" in page.text


async def test_a_client_over_its_failure_budget_is_refused(intake: Intake) -> None:
    from services.intake import ratelimit

    now = datetime.now(UTC)
    limit = ratelimit.Limit(f"track-fail:test-{uuid.uuid4().hex}", 3)
    async with intake.rt.pool.acquire() as conn:
        for expected in (None, None, None):
            assert await ratelimit.exceeded(conn, [limit], 900, now) is expected
            await ratelimit.hit(conn, limit.bucket, 900, now)
        assert await ratelimit.exceeded(conn, [limit], 900, now) == limit
        assert await ratelimit.exceeded(conn, [limit], 900, now + timedelta(seconds=900)) is None


# ---- WhatsApp -------------------------------------------------------------------------------


def new_wa_id() -> str:
    return f"62857{random.randint(10_000_000, 99_999_999)}"


async def converse(intake: Intake, wa_id: str, texts: list[str]) -> list[str]:
    """Send each text as a signed webhook call; return every reply received so far."""
    intake.secrets.add(wa_id)
    before = len(await intake.replies(wa_id, 0))
    for text in texts:
        r = await intake.webhook(wa_message(wa_id, text))
        assert r.status_code == 200 and r.json()["handled"] == 1, r.text
    return await intake.replies(wa_id, before + len(texts))


def conversation_texts(nik: str, document: str = "2", partner: str = "1") -> list[str]:
    return ["Halo", "DAFTAR", document, nik, "Siti Aminah", "Jl. Raya Mojosari No. 12", "3/5",
            "Mojosari", "Mojosari", "Kabupaten Mojokerto", "Jawa Timur", "61382", partner, "YA"]


async def test_webhook_verification(intake: Intake) -> None:
    ok = await intake.http.get("/webhooks/whatsapp", params={
        "hub.mode": "subscribe", "hub.verify_token": "wa-dev-verify-token", "hub.challenge": "1158201444"})
    assert ok.status_code == 200 and ok.text == "1158201444"
    for params in ({"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
                   {"hub.mode": "unsubscribe", "hub.verify_token": "wa-dev-verify-token",
                    "hub.challenge": "1"},
                   {"hub.mode": "subscribe", "hub.verify_token": "wa-dev-verify-token",
                    "hub.challenge": "<script>"}):  # fmt: skip
        assert (await intake.http.get("/webhooks/whatsapp", params=params)).status_code == 403


async def test_unsigned_or_wrongly_signed_calls_change_nothing(intake: Intake) -> None:
    wa_id = new_wa_id()
    payload = wa_message(wa_id, "DAFTAR")
    raw = json.dumps(payload).encode()
    unsigned = await intake.http.post("/webhooks/whatsapp", content=raw,
                                      headers={"content-type": "application/json"})  # fmt: skip
    wrong = await intake.webhook(payload, secret="not-the-secret")
    tampered = await intake.http.post("/webhooks/whatsapp", content=raw.replace(b"DAFTAR", b"BATAL"),
        headers={"content-type": "application/json", "X-Hub-Signature-256": sign_meta(APP_SECRET, raw)})
    assert unsigned.status_code == wrong.status_code == tampered.status_code == 401
    assert await intake.fetch("SELECT 1 FROM wa_conversations WHERE wa_id = $1", wa_id) == []


async def test_a_whole_conversation_registers_a_request(intake: Intake) -> None:
    wa_id = new_wa_id()
    nik = intake.body()["applicant"]["nik"]
    intake.secrets.add(nik)
    replies = await converse(intake, wa_id, conversation_texts(nik))
    assert "DAFTAR" in replies[0] and "Dokumen apa" in replies[1]
    assert "Periksa data" in replies[-2] and nik not in replies[-2]
    done = replies[-1]
    assert "terdaftar" in done and "Rp 20.000" in done
    code = re.search(r"KTM-[0-9A-Z]{4}-[0-9A-Z]{4}", done).group(0)  # type: ignore[union-attr]
    [row] = await intake.fetch("SELECT * FROM requests WHERE tracking_code = $1", code)
    assert row["channel"] == "whatsapp" and row["applicant_phone"] == "+" + wa_id
    assert row["applicant_nik"] == nik and row["document_type"] == "ktp_el"
    assert json.loads(row["delivery"])["partner"] == "pos"
    [state] = await intake.fetch("SELECT state, draft FROM wa_conversations WHERE wa_id = $1", wa_id)
    assert state["state"] == "idle" and json.loads(state["draft"]) == {}
    # STATUS: for the sender's own code, and not for anyone else's
    mine = await converse(intake, wa_id, [f"status {code.lower()}"])
    assert "Terdaftar" in mine[-1]
    stranger = new_wa_id()
    theirs = await converse(intake, stranger, [f"STATUS {code}"])
    assert "tidak ditemukan" in theirs[-1]


async def test_a_redelivered_message_is_handled_once(intake: Intake) -> None:
    wa_id = new_wa_id()
    intake.secrets.add(wa_id)
    message = wa_message(wa_id, "DAFTAR", wamid=f"wamid.dup-{uuid.uuid4().hex}")
    first = await intake.webhook(message)
    again = await intake.webhook(message)
    assert first.json() == {"handled": 1, "duplicates": 0}
    assert again.json() == {"handled": 0, "duplicates": 1}
    replies = await intake.replies(wa_id, 1)
    await asyncio.sleep(0.5)
    assert len(await intake.replies(wa_id, 1)) == len(replies) == 1
    [state] = await intake.fetch("SELECT state FROM wa_conversations WHERE wa_id = $1", wa_id)
    assert state["state"] == "document_type"


async def test_foreign_numbers_and_other_phone_number_ids(intake: Intake) -> None:
    foreign = "14155550100"
    r = await intake.webhook(wa_message(foreign, "DAFTAR"))
    assert r.json()["handled"] == 1
    assert "hanya untuk nomor WhatsApp Indonesia" in (await intake.replies(foreign, 1))[0]
    other = await intake.webhook(wa_message(new_wa_id(), "DAFTAR", phone_number_id="999"))
    assert other.json() == {"handled": 0, "duplicates": 0}


async def test_over_quota_on_whatsapp_the_draft_waits_for_the_day(intake: Intake) -> None:
    wa_id = new_wa_id()
    nik = intake.body()["applicant"]["nik"]
    intake.secrets.add(nik)
    # LIMITED_TYPE is menu item 7 and its quota is used up by the capacity test (or by this one)
    for _ in range(2):
        await intake.register(intake.body(document_type=LIMITED_TYPE))
    replies = await converse(intake, wa_id, conversation_texts(nik, document="7"))
    assert "kuota Akta Perceraian untuk hari ini sudah penuh" in replies[-1]
    [state] = await intake.fetch("SELECT state FROM wa_conversations WHERE wa_id = $1", wa_id)
    assert state["state"] == "confirm"


# ---- retention ------------------------------------------------------------------------------


async def test_retention_erases_personal_data_and_keeps_the_lifecycle(intake: Intake) -> None:
    body = intake.body()
    finished = (await intake.register(body)).json()
    still_open = (await intake.register(intake.body())).json()
    await deliver(intake, finished["request_id"])
    wa_id = new_wa_id()
    await converse(intake, wa_id, ["DAFTAR", "1"])  # a draft left half-way
    async with intake.rt.pool.acquire() as conn:
        await conn.execute("UPDATE wa_conversations SET updated_at = now() - interval '2 days'"
                           " WHERE wa_id = $1", wa_id)  # fmt: skip
    report = (await intake.http.post("/operator/retention/run", params={"older_than_days": 0},
                                     headers=SUPERVISOR)).json()  # fmt: skip
    assert report["requests_erased"] >= 1 and report["conversations_deleted"] >= 1
    [row] = await intake.fetch("SELECT * FROM requests WHERE request_id = $1",
                               uuid.UUID(finished["request_id"]))  # fmt: skip
    assert row["applicant_nik"] is None and row["applicant_name"] is None
    assert row["applicant_phone"] is None and json.loads(row["delivery"]) == {"partner": body[
        "delivery"]["partner"]}  # fmt: skip
    assert row["status"] == "delivered" and row["personal_data_erased_at"] is not None
    detail = (await intake.http.get(f"/requests/{finished['request_id']}", headers=OPERATOR)).json()
    assert detail["applicant"] is None and len(detail["timeline"]) == 3
    tracked = await intake.http.get(f"/tracking/{finished['tracking_code']}",
                                    params={"phone_last4": body["applicant"]["phone"][-4:]})
    assert tracked.status_code == 200 and tracked.json()["status"] == "delivered"
    [kept] = await intake.fetch("SELECT applicant_nik FROM requests WHERE request_id = $1",
                                uuid.UUID(still_open["request_id"]))  # fmt: skip
    assert kept["applicant_nik"] is not None
    assert await intake.fetch("SELECT 1 FROM wa_conversations WHERE wa_id = $1", wa_id) == []


# ---- privacy of the logs (last: it reads what every test above made the app write) ----------

NIK_SHAPED = re.compile(r"(?<![0-9])[0-9]{16}(?![0-9])")


def leaks(text: str, secrets: set[str]) -> list[str]:
    """Full NIKs or phone numbers in ``text``: each secret in its typed and normalised forms."""
    from services.intake.validation import InvalidValue, normalize_phone

    found = []
    for secret in secrets:
        forms = {secret}
        with contextlib.suppress(InvalidValue):
            e164 = normalize_phone(secret)
            forms |= {e164, e164[1:], "0" + e164[3:]}
        found += [f for f in forms if f in text]
    found += NIK_SHAPED.findall(text)
    return sorted(set(found))


def test_the_leak_finder_finds_leaks() -> None:
    assert leaks('{"event": "x", "nik": "3516014101900001"}', set()) == ["3516014101900001"]
    assert leaks("to=6281234567890", {"0812-3456-7890"}) == ["6281234567890"]
    assert leaks("nik=3516********0001 to=+628*******90", {"3516014101900001"}) == []


async def test_no_log_line_holds_a_full_nik_or_phone_number(intake: Intake) -> None:
    written = intake.written()
    assert written.count("\n") > 20, "the app's log lines were not captured"
    assert "request registered" in written
    assert len(intake.secrets) > 20
    assert leaks(written, intake.secrets) == []
