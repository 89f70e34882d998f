"""Every kind of bad input we could think of, and the answer each gets: never a 500, never an
event, always a problem a person can act on. The run writes the table of the closing note to
``.local/reports/intake_bad_input.md``.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deploy.local.system import ROOT
from services.intake.settings import DEV_OPERATOR_TOKEN
from shared.webhook_signing import sign_meta
from tests.integration.test_intake_front_door import (
    APP_SECRET,
    LIMITED_TYPE,
    Intake,
    running_intake,
    wa_message,
)

pytestmark = pytest.mark.integration

REPORT = ROOT / ".local" / "reports" / "intake_bad_input.md"
OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_TOKEN}"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
async def intake(ns: str) -> AsyncIterator[Intake]:
    async with running_intake(ns, registration_max_per_client_hour=100) as running:
        yield running


def good(**changes: Any) -> dict[str, Any]:
    """A valid body with ``a__b__c=value`` replaced (``...=DROP`` removes the key)."""
    rng = random.Random()
    body: dict[str, Any] = {
        "document_type": "ktp_el",
        "applicant": {"name": "Siti Aminah", "nik": f"35160141019{rng.randint(10000, 99999)}",
                      "phone": f"0812{rng.randint(10_000_000, 99_999_999)}"},
        "delivery": {"partner": "jnt", "address": {
            "street": "Jl. Raya Mojosari No. 12", "rt_rw": "003/005", "kelurahan": "Mojosari",
            "kecamatan": "Mojosari", "kabupaten_kota": "Kabupaten Mojokerto",
            "provinsi": "Jawa Timur", "postal_code": "61382"}},
    }  # fmt: skip
    for path, value in changes.items():
        target = body
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[p]
        if value is DROP:
            target.pop(leaf)
        else:
            target[leaf] = value
    return body


DROP = object()


@dataclass
class Case:
    what: str
    method: str = "POST"
    path: str = "/requests"
    json_body: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    expect: int = 422
    before: Callable[[Intake], Any] | None = None


def signed(payload: Any) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(payload).encode()
    return raw, {**JSON, "X-Hub-Signature-256": sign_meta(APP_SECRET, raw)}


def deep(n: int) -> str:
    return "[" * n + "]" * n


def _cases() -> list[Case]:
    raw_sig, sig_headers = signed([1, 2])
    twin = good()
    walk_in = good(via="walk_in", another_person=True)
    return [
        # the body as a whole
        Case("malformed JSON (cut off)", content=b'{"document_type": "ktp_el", ', headers=JSON,
             expect=400),
        Case("body not UTF-8", content=b'{"a": "\xff\xfe"}', headers=JSON, expect=400),
        Case("duplicate key in a JSON object", content=b'{"document_type": "kk", '
             b'"document_type": "ktp_el"}', headers=JSON, expect=400),
        Case("NaN in JSON", content=b'{"document_type": NaN}', headers=JSON, expect=400),
        Case("JSON nested 40 deep", content=deep(40).encode(), headers=JSON, expect=400),
        Case("JSON array instead of an object", json_body=[good()]),
        Case("JSON null", content=b"null", headers=JSON),
        Case("empty body", content=b"", headers=JSON),
        Case("text/plain content type", content=json.dumps(good()).encode(),
             headers={"content-type": "text/plain"}, expect=415),
        Case("form-encoded body", content=b"document_type=ktp_el",
             headers={"content-type": "application/x-www-form-urlencoded"}, expect=415),
        Case("no content type", content=json.dumps(good()).encode(), expect=415),
        Case("JSON in latin-1 charset", content=json.dumps(good()).encode(),
             headers={"content-type": "application/json; charset=latin-1"}, expect=415),
        Case("body of 70 KB", json_body=good(applicant__name="A" * 70_000), expect=413),
        # NIK
        Case("applicant missing", json_body=good(applicant=DROP)),
        Case("NIK of 15 digits", json_body=good(applicant__nik="351601410190001")),
        Case("NIK with a letter", json_body=good(applicant__nik="35160141019O0001")),
        Case("NIK as a JSON number", json_body=good(applicant__nik=3516014101900001)),
        Case("NIK in full-width digits", json_body=good(applicant__nik="３５１６０１４１０１９００００１")),
        Case("NIK of an unknown province (99)", json_body=good(applicant__nik="9916014101900001")),
        Case("NIK of an unknown regency (35 99)", json_body=good(applicant__nik="3599014101900001")),
        Case("NIK with district 00", json_body=good(applicant__nik="3516004101900001")),
        Case("NIK birth day 35", json_body=good(applicant__nik="3516013501900001")),
        Case("NIK birth day 81 (stdnum takes it as 1)", json_body=good(applicant__nik="3516018101900001")),
        Case("NIK birth month 13", json_body=good(applicant__nik="3516014113900001")),
        Case("NIK born 30 February", json_body=good(applicant__nik="3516013002900001")),
        Case("NIK serial 0000", json_body=good(applicant__nik="3516014101900000")),
        # phone numbers
        Case("phone: Jakarta landline", json_body=good(applicant__phone="021-5550100")),
        Case("phone: US number", json_body=good(applicant__phone="+1 415 555 0100")),
        Case("phone: too short", json_body=good(applicant__phone="0812-345")),
        Case("phone: letters", json_body=good(applicant__phone="0812-CALL-ME")),
        Case("phone: Arabic-Indic digits", json_body=good(applicant__phone="٠٨١٢٣٤٥٦٧٨٩٠")),
        Case("recipient phone invalid", json_body=good(delivery__recipient_phone="12345")),
        # the catalogue and what is not the caller's
        Case("document type not in the catalogue (SIM)", json_body=good(document_type="sim")),
        Case("partner not pos/jnt (JNE)", json_body=good(delivery__partner="jne")),
        Case("channel counter on the public endpoint", json_body=good(channel="counter")),
        Case("cod_fee sent by the caller", json_body=good(cod_fee=50_000)),
        Case("unknown field (tracking_code)", json_body=good(tracking_code="KTM-AAAA-BBBB")),
        # the address
        Case("address: rt_rw missing", json_body=good(delivery__address__rt_rw=DROP)),
        Case("address: street only spaces", json_body=good(delivery__address__street="   ")),
        Case("address: RT/RW 000/000", json_body=good(delivery__address__rt_rw="000/000")),
        Case("address: postal code of 4 digits", json_body=good(delivery__address__postal_code="6138")),
        Case("address: postal code starting 0", json_body=good(delivery__address__postal_code="01382")),
        Case("address: unknown province", json_body=good(delivery__address__provinsi="Jawa Utara")),
        Case("address: Mojokerto without Kabupaten/Kota",
             json_body=good(delivery__address__kabupaten_kota="Mojokerto")),
        Case("address: NUL byte in the street", json_body=good(delivery__address__street="Jl. A\x00B")),
        Case("address: 300-character kelurahan", json_body=good(delivery__address__kelurahan="K" * 300)),
        Case("name with digits", json_body=good(applicant__name="Budi 2")),
        Case("name of 101 letters", json_body=good(applicant__name="A" * 101)),
        # idempotency, open requests, capacity
        Case("Idempotency-Key with a space", json_body=good(), headers={"Idempotency-Key": "a b"},
             expect=400),
        Case("Idempotency-Key reused with another body", json_body=good(),
             headers={"Idempotency-Key": "bad-input-reused"}, expect=409,
             before=lambda i: i.register(good(), **{"Idempotency-Key": "bad-input-reused"})),
        Case("same applicant, same document, still open", json_body=twin, expect=409,
             before=lambda i: i.register(copy.deepcopy(twin))),
        Case("daily quota of the document type used up", json_body=good(document_type=LIMITED_TYPE),
             expect=409, before=lambda i: _fill_quota(i)),
        # operators
        Case("operator endpoint without a token", path="/operator/requests", json_body=walk_in,
             expect=401),
        Case("operator endpoint with an unknown token", path="/operator/requests", json_body=walk_in,
             headers={"Authorization": "Bearer guessed-token-123456"}, expect=401),
        Case("operator endpoint with Basic auth", path="/operator/requests", json_body=walk_in,
             headers={"Authorization": "Basic ZGV2Om9wZXJhdG9y"}, expect=401),
        Case("operator role running the retention job", path="/operator/retention/run",
             headers=OPERATOR, expect=403),
        Case("another_person for a KTP-el", path="/operator/requests", json_body=walk_in,
             headers=OPERATOR),
        Case("operator registration without via", path="/operator/requests",
             json_body=good(), headers=OPERATOR),
        Case("request id not a UUID", method="GET", path="/requests/12345", headers=OPERATOR),
        Case("request id unknown", method="GET", path=f"/requests/{uuid.uuid4()}",
             headers=OPERATOR, expect=404),
        Case("PUT on /requests", method="PUT", json_body=good(), expect=405),
        Case("unknown path", method="GET", path="/permohonan", expect=404),
        # public tracking
        Case("tracking: malformed code", method="GET", path="/tracking/KTM-12",
             params={"phone_last4": "1234"}),
        Case("tracking: phone digits not 4 digits", method="GET", path="/tracking/KTM-0000-0000",
             params={"phone_last4": "12a"}),
        Case("tracking: unknown code", method="GET", path="/tracking/KTM-0000-0000",
             params={"phone_last4": "1234"}, expect=404),
        Case("tracking: 6th wrong guess on one code", method="GET", path="/tracking/KTM-1111-1111",
             params={"phone_last4": "1234"}, expect=429, before=lambda i: _guess(i, "KTM-1111-1111")),
        # WhatsApp webhook
        Case("webhook: no signature", path="/webhooks/whatsapp",
             json_body=wa_message("6285700000001", "DAFTAR"), expect=401),
        Case("webhook: signature of another body", path="/webhooks/whatsapp",
             content=b'{"entry": []}', headers=sig_headers, expect=401),
        Case("webhook: signed JSON array", path="/webhooks/whatsapp", content=raw_sig,
             headers=sig_headers, expect=400),
        Case("webhook verification with a wrong token", method="GET", path="/webhooks/whatsapp",
             params={"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "1"},
             expect=403),
        # last: it uses up this client's registrations for the hour
        Case("101st web registration from one client in an hour", json_body=good(), expect=429,
             before=lambda i: _use_up_registrations(i)),
    ]  # fmt: skip


async def _use_up_registrations(intake: Intake) -> None:
    from datetime import UTC, datetime

    from services.intake.ratelimit import window_start

    async with intake.rt.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO rate_limit_hits (bucket, window_start, hits) VALUES ($1, $2, 100)"
            " ON CONFLICT (bucket, window_start) DO UPDATE SET hits = 100",
            "register:127.0.0.1", window_start(datetime.now(UTC), 3600),
        )  # fmt: skip


async def _fill_quota(intake: Intake) -> None:
    for _ in range(2):
        await intake.register(good(document_type=LIMITED_TYPE))


async def _guess(intake: Intake, code: str) -> None:
    for _ in range(intake.settings.tracking_max_failures_per_code):
        await intake.http.get(f"/tracking/{code}", params={"phone_last4": "1234"})


async def _counts(intake: Intake) -> tuple[int, int]:
    async with intake.rt.pool.acquire() as conn:
        requests = await conn.fetchval("SELECT count(*) FROM requests")
        events = await conn.fetchval(
            "SELECT count(*) FROM request_timeline WHERE event_type = 'request-registered'"
        )
    return int(requests), int(events)


TO_NIK = ["DAFTAR", "1"]
TO_NAME = [*TO_NIK, "3516014101900001"]
TO_ADDRESS = [*TO_NAME, "Siti Aminah", "Jl. Raya Mojosari No. 12"]
TO_COURIER = [*TO_ADDRESS, "3/5", "Mojosari", "Mojosari", "Kabupaten Mojokerto", "Jawa Timur",
              "61382"]  # fmt: skip
# (what, messages to get there, the bad message or None for an image)
WA_CASES: list[tuple[str, list[str], str | None]] = [
    ("document not in the menu (SIM)", ["DAFTAR"], "SIM"),
    ("NIK of 15 digits", TO_NIK, "351601410190001"),
    ("NIK of an unknown regency", TO_NIK, "3599014101900001"),
    ("NIK birth day 35", TO_NIK, "3516013501900001"),
    ("a photo instead of the NIK", TO_NIK, None),
    ("name with digits", TO_NAME, "Budi 2"),
    ("name with a NUL byte", TO_NAME, "Budi\x00"),
    ("RT/RW as words", [*TO_ADDRESS], "dekat masjid"),
    ("kabupaten without Kabupaten/Kota", [*TO_ADDRESS, "3/5", "Mojosari", "Mojosari"], "Mojokerto"),
    ("unknown province", [*TO_ADDRESS, "3/5", "Mojosari", "Mojosari", "Kab. Mojokerto"], "Jawa Utara"),
    ("postal code of 4 digits", [*TO_COURIER[:-1]], "6138"),
    ("courier 3 (JNE)", TO_COURIER, "3"),
    ("anything but YA at the summary", [*TO_COURIER, "2"], "mungkin"),
    ("YA with nothing to confirm", [], "YA"),
    ("STATUS without a code", [], "STATUS"),
    ("STATUS with a malformed code", [], "STATUS KTM-12"),
    ("STATUS of a code that is not the sender's", [], "STATUS KTM-0000-0000"),
    ("a greeting", [], "Assalamualaikum, mau tanya"),
]  # fmt: skip


async def _wa_rows(intake: Intake) -> list[tuple[int, str, int, str, str]]:
    rows = []
    for number, (what, path, bad) in enumerate(WA_CASES, start=1):
        wa_id = f"62858{random.randint(10_000_000, 99_999_999)}"
        for text in path:
            await intake.webhook(wa_message(wa_id, text))
        message = wa_message(wa_id, bad, kind="text" if bad is not None else "image")
        before = await _counts(intake)
        r = await intake.webhook(message)
        assert r.status_code == 200 and r.json()["handled"] == 1, what
        replies = await intake.replies(wa_id, len(path) + 1)
        assert await _counts(intake) == before, what
        reply = replies[-1].split("\n")[0]
        assert "3516014101900001" not in replies[-1], what
        rows.append((number, what, r.status_code, "reply", reply))
    return rows


async def test_every_bad_input_gets_a_4xx_problem_and_changes_nothing(intake: Intake) -> None:
    rows = []
    for number, case in enumerate(_cases(), start=1):
        if case.before:
            await case.before(intake)
        before = await _counts(intake)
        kwargs: dict[str, Any] = {"headers": case.headers, "params": case.params}
        if case.json_body is not None:
            kwargs["json"] = case.json_body
        elif case.content is not None:
            kwargs["content"] = case.content
        r = await intake.http.request(case.method, case.path, **kwargs)
        assert await _counts(intake) == before, f"{case.what}: something was registered"
        assert r.status_code == case.expect, f"{case.what}: {r.status_code} {r.text[:300]}"
        assert r.headers["content-type"] == "application/problem+json", case.what
        problem = r.json()
        assert problem["status"] == r.status_code and " / " in problem["title"], case.what
        fields = [e["field"] for e in problem.get("errors", [])]
        if r.status_code == 422:
            assert fields and all(" / " in e["message"] for e in problem["errors"]), case.what
        reason = "; ".join(f"`{e['field']}`: {e['message']}" for e in problem.get("errors", []))
        rows.append((number, case.what, r.status_code, problem["title"],
                     reason or problem.get("detail", "")))  # fmt: skip
    assert len(rows) >= 30
    wa_rows = await _wa_rows(intake)
    _write(rows, wa_rows)


def _write(http: list[tuple[int, str, int, str, str]],
           whatsapp: list[tuple[int, str, int, str, str]]) -> None:  # fmt: skip
    lines = ["### HTTP", "", "| # | bad input | HTTP | title | fields and reasons / detail |",
             "|---|---|---|---|---|"]  # fmt: skip
    for number, what, status, title, reason in http:
        cell = reason.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {number} | {what} | {status} | {title} | {cell} |")
    lines += ["", "### WhatsApp (signed webhook calls; the answer is the reply)", "",
              "| # | bad input | webhook | reply (first line) |", "|---|---|---|---|"]  # fmt: skip
    for number, what, status, _, reply in whatsapp:
        cell = reply.replace("|", "\\|")
        lines.append(f"| W{number} | {what} | {status} | {cell} |")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    print(f"\nbad-input table ({len(http)} HTTP + {len(whatsapp)} WhatsApp kinds): "
          f"{Path(REPORT).relative_to(ROOT)}")  # fmt: skip


# ---- a mutation fuzzer: whatever a field holds, the answer is never a 500 ------------------

NASTY: list[Any] = [
    "", " ", "\x00", "\u202e\u202d", "٣٥١٦", "３５１６", "😀", "<script>alert(1)</script>",
    "' OR 1=1 --", "A" * 5000, "9" * 400, 0, -1, 2**63, 1e308, -0.0, True, False, None, [], {},
    [[[[[]]]]], {"a": {"b": {"c": {}}}}, ["ktp_el"], {"$ne": None}, "NaN", "null",
]  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    return found


def _mutate(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        *parents, leaf = rng.choice(_paths(body))
        target: Any = body
        for p in parents:
            target = target[p] if isinstance(target, dict) else {}
        if isinstance(target, dict):
            if rng.random() < 0.15:
                target.pop(leaf, None)
            else:
                target[rng.choice([leaf, leaf, f"{leaf}_x"])] = copy.deepcopy(rng.choice(NASTY))
    return body


async def test_mutated_bodies_never_get_a_500(intake: Intake) -> None:
    rng = random.Random(20_000)
    seen: dict[int, int] = {}
    for _ in range(400):
        body = _mutate(good(), rng)
        r = await intake.http.post("/requests", json=body)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert r.headers["content-type"] == "application/problem+json"
    for raw in (b"\x00", b"{" * 5000, b'{"a": 1e999999}', b'"\\ud800"', b"\xef\xbb\xbf{}"):
        r = await intake.http.post("/requests", content=raw, headers=JSON)
        assert r.status_code < 500, (raw[:20], r.text)
    for code in ("%00", "KTM-%00", "A" * 300, "../../etc/passwd", "KTM-0000-0000%0a"):
        for path in (f"/tracking/{code}", f"/lacak?kode={code}&hp=1234"):
            assert (await intake.http.get(path, params={"phone_last4": "1234"})).status_code < 500
    assert seen.get(422, 0) > 100, seen
