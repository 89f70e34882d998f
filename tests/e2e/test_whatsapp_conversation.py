"""Acceptance: a WhatsApp conversation, through signed webhook calls, registers a request that the
rest of the system delivers; and no service wrote a full NIK or phone number in its log.

This file runs after the other e2e files (pytest takes them in name order), so its last test
reads every line the services wrote during the e2e session.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import time

import asyncpg
import httpx
import pytest

from deploy.local.demo import operator_headers, sample_nik
from deploy.local.system import SERVICES, System
from tests.e2e import flow

pytestmark = pytest.mark.e2e

# Every NIK and phone this file used; the log scan looks for each in every form.
USED: set[str] = set()
CODE = re.compile(r"KTM-[0-9A-Z]{4}-[0-9A-Z]{4}")


async def wait_replies_sent(dsn: str, wa_id: str, timeout_s: float = 30.0) -> None:
    """Until intake has no unsent reply to ``wa_id`` (every one sent and marked)."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout_s
        while await conn.fetchval("SELECT count(*) FROM intake.wa_outbound"
                                  " WHERE wa_id = $1 AND status = 'pending'", wa_id):
            assert time.monotonic() < deadline, f"replies to {wa_id} still unsent"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_a_whatsapp_conversation_registers_a_request_that_is_delivered(
    system: System, e2e_env: dict[str, str]
) -> None:
    rng = random.Random()
    wa_id = f"62856{rng.randint(10_000_000, 99_999_999)}"
    nik = sample_nik(rng)
    USED.update({wa_id, nik})
    before_restart = ["Halo", "DAFTAR", "KTP", nik, "Siti Aminah"]
    after_restart = ["RT 3 RW 5", "Mojosari", "Mojosari", "Kab. Mojokerto", "Jawa Timur", "61382",
                     "2"]  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as http:
        for text in before_restart:
            assert (await flow.wa_send(http, system, wa_id, text))["handled"] == 1
        # Meta redelivers: the same message id is applied once
        street = "Jl. Raya Mojosari No. 12"
        again = await flow.wa_send(http, system, wa_id, street, wamid=f"wamid.{wa_id}-street")
        dup = await flow.wa_send(http, system, wa_id, street, wamid=f"wamid.{wa_id}-street")
        assert again["handled"] == 1 and dup == {"handled": 0, "duplicates": 1}
        # the conversation lives in PostgreSQL: it survives intake being killed mid-way. Killed
        # between two messages, not while it sends a reply: a reply the Cloud API accepted just
        # before the kill, and not yet marked sent, goes out once more (the documented window of
        # services/intake/replies.py), which is not what this test is about.
        await wait_replies_sent(e2e_env["DATABASE_URL"], wa_id)
        system.kill("intake", signal.SIGKILL)
        system.start("intake")
        system.wait_healthy(["intake"], timeout_s=60)
        for text in after_restart:
            assert (await flow.wa_send(http, system, wa_id, text))["handled"] == 1
        handled = len(before_restart) + 1 + len(after_restart)
        replies = await flow.wa_texts(http, system, wa_id, at_least=handled)
        assert len(replies) == handled, replies  # the redelivery got no second answer
        summary = replies[-1]
        assert "Periksa data permohonan" in summary, replies
        assert "3516********" in summary and nik not in summary and "J&T Express" in summary
        assert "Rp 20.000" in summary and "RT/RW 003/005" in summary
        await flow.wa_send(http, system, wa_id, "YA")
        replies = await flow.wa_texts(http, system, wa_id, at_least=handled + 1)
        assert "terdaftar" in replies[-1], replies[-1]
        code = CODE.search(replies[-1]).group(0)  # type: ignore[union-attr]

        found = await http.get(f"{system.url('intake')}/operator/requests",
                               params={"tracking_code": code}, headers=operator_headers())
        [request] = found.json()["requests"]
        assert request["channel"] == "whatsapp" and request["partner"] == "jnt"
        await flow.print_request(http, system, request["request_id"])
        (status,) = (await flow.wait_delivered(http, system, [request["request_id"]])).values()
        assert status["applicant"]["nik"] == nik and status["applicant"]["phone"] == "+" + wa_id
        events = {t["event"] for t in status["timeline"]}
        assert {"request-registered", "document-printed", "delivered"} <= events, status["timeline"]

        # STATUS on WhatsApp and the public tracking page tell the same story
        await flow.wa_send(http, system, wa_id, f"status {code.lower()}")
        replies = await flow.wa_texts(http, system, wa_id, at_least=handled + 2)
        assert "Sudah diterima" in replies[-1] and code in replies[-1]
        page = await http.get(f"{system.url('intake')}/lacak", params={"kode": code,
                                                                       "hp": wa_id[-4:]})
        assert page.status_code == 200 and "Sudah diterima" in page.text
        assert "Siti Aminah" not in page.text and nik not in page.text
        await flow.wait_notifications_sent(http, system, request["request_id"], expected=5)
        everything = await flow.whatsapp_messages(http, system, wa_id)
    assert all(nik not in str(m) for m in everything)
    templates = {m["template"] for m in everything if m["type"] == "template"}
    assert {"ketanmu_terdaftar", "ketanmu_diterima"} <= templates


async def test_over_http_bodies_are_guarded_too(system: System) -> None:
    url = f"{system.url('intake')}/requests"
    async with httpx.AsyncClient(timeout=10) as http:
        big = await http.post(url, content=b"{" + b" " * 100_000 + b"}",
                              headers={"content-type": "application/json"})  # fmt: skip

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(100):
                yield b" " * 1000

        streamed = await http.post(url, content=chunks(), headers={"content-type": "application/json"})
        plain = await http.post(url, content=b"{}", headers={"content-type": "text/plain"})
    assert big.status_code == streamed.status_code == 413
    assert plain.status_code == 415
    assert big.headers["content-type"] == "application/problem+json"


# ---- the log scan (last) --------------------------------------------------------------------

# Unmasked shapes: 16 digits in a row (a NIK), an Indonesian mobile number in any usual form.
NIK_SHAPED = re.compile(r"(?<![0-9*])[0-9]{16}(?![0-9])")
PHONE_SHAPED = re.compile(r"(?<![\w*+])(?:\+?62|0)8[1235789][0-9]{7,10}(?![0-9])")


def leaks(line: str, used: set[str]) -> list[str]:
    found = [u for u in used if u in line]
    found += [u[2:] for u in used if u.startswith("62") and "0" + u[2:] in line]
    return found + NIK_SHAPED.findall(line) + PHONE_SHAPED.findall(line)


def test_the_scan_would_see_a_leak() -> None:
    assert leaks('{"nik": "3516014101900001"}', set())
    assert leaks('{"to": "6281234567890"}', set()) and leaks("tel 081234567890", set())
    assert leaks("wa=6281234567890", {"6281234567890"})
    assert not leaks('{"nik": "3516********0001", "phone": "+628*******90"}', set())
    assert not leaks('{"waybill": "JX0812345678", "awb": "P081234567890"}', set())


def test_no_service_log_line_holds_a_full_nik_or_phone_number(system: System) -> None:
    assert USED, "the conversation test did not run first"
    scanned = 0
    problems = []
    for name in SERVICES:
        for number, line in enumerate(system.log_path(name).read_text(errors="replace").splitlines()):
            scanned += 1
            if found := leaks(line, USED):
                problems.append(f"{name}.log:{number + 1}: {sorted(set(found))}")
    assert scanned > 20, f"only {scanned} log lines: were the services logging?"
    assert problems == [], "\n".join(problems[:20])
