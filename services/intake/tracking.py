"""Public tracking: tracking code + the last 4 digits of the applicant's phone -> the timeline.

JSON at ``GET /tracking/{code}?phone_last4=1234`` and a plain HTML page in Bahasa Indonesia at
``GET /lacak?kode=...&hp=...`` (a form when empty). No personal data in either: no name, NIK,
phone or address, and free-text reasons are masked. A wrong code and wrong digits get the same
answer, and both count against the client's and the code's failure budgets (``ratelimit.py``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from shared.contracts.events import DocumentType
from shared.contracts.money import format_rupiah
from shared.http import Problem
from shared.privacy import mask_text

from . import ratelimit, repository
from .capacity import format_moment
from .domain import DOCUMENT_NAMES, EVENT_LABELS, PARTNER_NAMES, STATUS_LABELS
from .ratelimit import Limit
from .settings import IntakeSettings
from .validation import InvalidValue, normalize_tracking_code, phone_last_digits

router = APIRouter(tags=["tracking"])

_PUBLIC_DETAIL = ("partner", "waybill", "documents_collected", "reason", "attempt")
_NOT_FOUND = "Kode lacak atau nomor tidak cocok / Tracking code or phone digits do not match"


def public_view(
    row: asyncpg.Record, events: list[asyncpg.Record], settings: IntakeSettings
) -> dict[str, Any]:
    """The request as anyone holding its code and phone digits may see it."""
    doc = DocumentType(row["document_type"])
    partner = json.loads(row["delivery"])["partner"]
    timeline = []
    for e in events:
        detail = json.loads(e["detail"])
        shown = {k: detail[k] for k in _PUBLIC_DETAIL if k in detail}
        if "reason" in shown:
            shown["reason"] = mask_text(str(shown["reason"]))
        timeline.append(
            {
                "event": e["event_type"],
                "label": EVENT_LABELS.get(e["event_type"], e["event_type"]),
                "occurred_at": e["occurred_at"].astimezone(UTC).isoformat(),
                "occurred_at_local": format_moment(e["occurred_at"], settings.zone),
                **shown,
            }
        )
    return {
        "tracking_code": row["tracking_code"],
        "document_type": doc.value,
        "document_name": DOCUMENT_NAMES[doc],
        "status": row["status"],
        "status_label": STATUS_LABELS.get(row["status"], row["status"]),
        "partner": partner,
        "partner_name": PARTNER_NAMES.get(partner, partner),
        "cod_fee": row["cod_fee"],
        "cod_fee_display": format_rupiah(row["cod_fee"]),
        "cod_paid": row["cod_paid"],
        "requirement_documents": json.loads(row["requirement_documents"]),
        "timeline": timeline,
    }


async def lookup(request: Request, raw_code: str, raw_digits: str) -> dict[str, Any]:
    rt = request.app.state.rt
    s: IntakeSettings = rt.settings
    window, now = s.tracking_window_s, datetime.now(UTC)
    client = ratelimit.client_of(request, s)
    fail_client = Limit(f"track-fail:{client}", s.tracking_max_failures_per_client)
    all_client = Limit(f"track:{client}", s.tracking_max_lookups_per_client)
    async with rt.pool.acquire() as conn:
        if await ratelimit.exceeded(conn, [fail_client, all_client], window, now):
            raise ratelimit.too_many(ratelimit.seconds_left(now, window))
        await ratelimit.hit(conn, all_client.bucket, window, now)
        code = normalize_tracking_code(raw_code)
        errors = []
        if code is None:
            errors.append({"field": "tracking_code", "code": "value_error", "message":
                           "kode lacak seperti KTM-7QX2-94HD / a code like KTM-7QX2-94HD"})  # fmt: skip
        try:
            digits = phone_last_digits(raw_digits)
        except InvalidValue as exc:
            errors.append({"field": "phone_last4", "code": "value_error", "message": str(exc)})
        if errors:
            await ratelimit.hit(conn, fail_client.bucket, window, now)
            raise Problem(422, "Data tidak valid / Invalid data",
                          "Periksa kolom berikut / Check these fields", errors)  # fmt: skip
        assert code is not None
        fail_code = Limit(f"track-fail-code:{code}", s.tracking_max_failures_per_code)
        if await ratelimit.exceeded(conn, [fail_code], window, now):
            raise ratelimit.too_many(ratelimit.seconds_left(now, window))
        row = await repository.find_by_tracking_code(conn, code)
        if row is None or row["phone_last4"] != digits:
            await ratelimit.hit(conn, fail_client.bucket, window, now)
            await ratelimit.hit(conn, fail_code.bucket, window, now)
            raise Problem(404, _NOT_FOUND, "Periksa kode dan 4 digit terakhir nomor WhatsApp"
                          " / check the code and the last 4 digits of the phone")  # fmt: skip
        events = await repository.timeline(conn, row["request_id"])
    return public_view(row, events, s)


_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


@router.get("/tracking/{tracking_code}")
async def track_json(
    tracking_code: str,
    request: Request,
    phone_last4: Annotated[str, Query(max_length=20)] = "",
) -> Any:
    view = await lookup(request, tracking_code[:40], phone_last4)
    return JSONResponse(view, headers={"Cache-Control": "no-store"})


@router.get("/lacak", response_class=HTMLResponse)
async def track_page(
    request: Request,
    kode: Annotated[str, Query(max_length=40)] = "",
    hp: Annotated[str, Query(max_length=20)] = "",
) -> HTMLResponse:
    if not kode and not hp:
        return HTMLResponse(render_page(None, None, ""), headers=_HEADERS)
    try:
        view = await lookup(request, kode, hp)
    except Problem as problem:
        message = problem.title.split(" / ")[0]
        if problem.errors:
            message += ": " + "; ".join(e["message"].split(" / ")[0] for e in problem.errors)
        elif problem.status == 429:
            message += ". " + problem.detail.split(" / ")[0]
        return HTMLResponse(render_page(None, message, kode), status_code=problem.status,
                            headers={**_HEADERS, **(problem.headers or {})})  # fmt: skip
    return HTMLResponse(render_page(view, None, view["tracking_code"]), headers=_HEADERS)


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}label{display:block;margin:.6rem 0 .2rem}input{font-size:1rem;padding:.3rem}"
    "ol{padding-left:1.2rem}li{margin:.4rem 0}.err{color:#a00}.status{font-size:1.2rem}"
)


def render_page(view: dict[str, Any] | None, error: str | None, code: str) -> str:
    """The tracking page; every value is escaped (codes and reasons come from outside)."""
    parts = [
        "<!doctype html><html lang=\"id\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        f"<title>Lacak Permohonan — Ketanmu</title><style>{_STYLE}</style></head><body>",
        "<h1>Lacak Permohonan Dokumen</h1>",
        "<form method=\"get\" action=\"/lacak\">",
        "<label for=\"kode\">Kode lacak</label>",
        (f"<input id=\"kode\" name=\"kode\" value=\"{escape(code)}\" maxlength=\"20\" "
        "placeholder=\"KTM-7QX2-94HD\" autocomplete=\"off\" required>"),
        "<label for=\"hp\">4 digit terakhir nomor WhatsApp</label>",
        ("<input id=\"hp\" name=\"hp\" maxlength=\"4\" inputmode=\"numeric\" "
        "pattern=\"[0-9]{4}\" autocomplete=\"off\" required>"),
        " <button type=\"submit\">Lacak</button></form>",
    ]
    if error:
        parts.append(f"<p class=\"err\" role=\"alert\">{escape(error)}</p>")
    if view:
        paid = "sudah dibayar" if view["cod_paid"] else "dibayar tunai ke kurir saat diterima"
        parts += [
            f"<h2>{escape(view['document_name'])} — {escape(view['tracking_code'])}</h2>",
            f"<p class=\"status\">Status: <strong>{escape(view['status_label'])}</strong></p>",
            (f"<p>Kurir: {escape(view['partner_name'])}. Ongkos kirim "
            f"{escape(view['cod_fee_display'])}, {paid}.</p>"),
            "<p>Serahkan ke kurir saat dokumen diterima: "
            + escape(", ".join(view["requirement_documents"]))
            + ".</p><h3>Riwayat</h3><ol>",
        ]
        for step in view["timeline"]:
            extra = ""
            if step.get("waybill"):
                extra += f" (resi {escape(str(step['waybill']))})"
            if step.get("reason"):
                extra += f": {escape(str(step['reason']))}"
            parts.append(
                f"<li>{escape(step['occurred_at_local'])} — {escape(step['label'])}{extra}</li>"
            )
        parts.append("</ol>")
    parts.append("<p><small>Dinas Kependudukan dan Pencatatan Sipil — layanan Ketanmu. "
                 "Dokumen kependudukan gratis; yang dibayar hanya ongkos kirim.</small></p>")
    parts.append("</body></html>")
    return "".join(parts)
