"""Log lines: personal data never reaches one, and the cheap paths write what the plain ones did."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import httpx
import pytest
import structlog
from fastapi import APIRouter, FastAPI

from shared import logging as ketanmu_logging
from shared import privacy
from shared.contracts.events import Applicant
from shared.http import RequestContextMiddleware
from shared.logging import _mask_personal_data, _render_json, configure_logging
from shared.privacy import mask_value

NIK = "3516014101900001"
PHONES = ["+6281234567890", "6281234567890", "081234567890", "0812-3456-7890", "0812 3456 7890",
          "+62 812-3456-7890", "+62-812-3456-7890", "0812.3456.7890", "(+62) 812-3456-7890",
          "(0812) 3456-7890", "(0812)3456-7890", "+62 (0)812-3456-7890", "+620812-3456-7890",
          "0062 812 3456 7890", "006281234567890"]


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    configure_logging("test", "INFO", json=True)
    yield out
    structlog.reset_defaults()


def test_the_cheap_check_was_derived_from_these_patterns() -> None:
    # shared/logging.py skips strings without 10 characters in a row from [\d\s.()-]; that holds for
    # these two patterns only. Changed them? Check _MAYBE_PERSONAL still covers every match.
    assert privacy._NIK_RE.pattern == r"(?<!\d)(\d{4})\d{8}(\d{4})(?!\d)"
    assert privacy._PHONE_RE.pattern == (
        r"(?<![\w+])((?:\(?(?:\+|00)?62\)?[\s.-]*(?:\(0\)|0)?[\s.-]*|\(?0)8)"
        r"[\d\s.()-]{6,16}(\d{2})(?!\d)"
    )
    assert privacy._PHONE_MIN_DIGITS == 10


@pytest.mark.parametrize(
    "text",
    [
        NIK, *PHONES, f"nik {NIK} telp {PHONES[3]}.", f"[{NIK}]", "\u0661" * 16,  # Arabic-Indic
        "0812\u00a03456\u00a07890", "08123456", "2026-11-22T12:38:48.381825Z", "ktp_el", "",
        str(uuid.uuid4()), "a" * 200, "1234567890", "-" * 30, "Jl. Raya No. 12, RT 003/005",
    ],
)
def test_masking_in_log_lines_equals_mask_value(text: str) -> None:
    event = {"event": text, "nested": {"k": [text, (text,)]}, "n": 3, "none": None}
    assert _mask_personal_data(None, "info", dict(event)) == mask_value(event)


def test_no_personal_data_in_any_log_line(lines: io.StringIO) -> None:
    log = structlog.get_logger("t")
    structlog.contextvars.bind_contextvars(http_request_id=f"caller-sent-{NIK}")
    try:
        for phone in PHONES:
            log.info(f"registered {NIK} {phone}", nik=NIK, phone=phone, body={"applicant": [phone]})
        log.warning("from the wire", detail=(NIK, phone), data={"x": {"y": NIK}})
        try:
            raise ValueError(f"bad NIK {NIK}")
        except ValueError:
            log.exception("crash")
    finally:
        structlog.contextvars.unbind_contextvars("http_request_id")
    text = lines.getvalue()
    assert text.count("\n") == len(PHONES) + 2
    assert NIK not in text and "3516********0001" in text
    for phone in PHONES:
        assert phone not in text
    assert "3456-7890" not in text and "3456.7890" not in text and "3456 7890" not in text


class _Holder:
    def __repr__(self) -> str:
        return f"_Holder(nik={NIK!r}, phone='+6281234567890')"


def test_objects_and_numbers_are_masked_too(lines: io.StringIO) -> None:
    """A pydantic model (an event's applicant), an object's repr and a NIK held as a number go
    through the JSON encoder's fallback or the number check, not the string masking."""
    applicant = Applicant(name="Siti", nik=NIK, phone="+6281234567890")
    structlog.get_logger("t").info(
        "objects", applicant=applicant, holder=_Holder(), nik_number=int(NIK), nested=[applicant],
        small=12345, flag=True,
    )
    text = lines.getvalue()
    assert NIK not in text and "6281234567890" not in text
    line = json.loads(text)
    assert line["applicant"] == {"name": "Siti", "nik": "3516********0001",
                                 "phone": "+628******90"}
    assert line["nik_number"] == "3516********0001"
    assert line["holder"].startswith("_Holder(nik='3516********0001'")
    assert line["nested"] == [line["applicant"]]
    assert line["small"] == 12345 and line["flag"] is True


def test_json_lines_as_structlog_renders_them() -> None:
    event: dict[str, Any] = {"event": "ünïcode ✓", "n": 1.5, "id": uuid.uuid4(), "t": (1, "a"),
                             "none": None, "flag": True}
    assert _render_json(None, "info", dict(event)) == structlog.processors.JSONRenderer()(
        None, "info", dict(event)
    )
    assert json.loads(_render_json(None, "info", event))["id"] == repr(event["id"])


async def test_request_id_header_and_log_context() -> None:
    seen: list[dict[str, Any]] = []
    router = APIRouter()

    @router.get("/x")
    async def x() -> dict[str, str]:
        seen.append(structlog.contextvars.get_contextvars())
        return {}

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(RequestContextMiddleware)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t.test") as client:
        given = await client.get("/x", headers={"x-request-id": "abc"})
        fresh = await client.get("/x")
    assert given.headers["x-request-id"] == "abc" and seen[0]["http_request_id"] == "abc"
    assert uuid.UUID(fresh.headers["x-request-id"]) and seen[1]["http_request_id"] != "abc"
    assert "http_request_id" not in structlog.contextvars.get_contextvars()
    assert ketanmu_logging._MAYBE_PERSONAL.search(NIK)
