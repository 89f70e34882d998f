"""COD reconciliation per partner per office day, and the partners' settlement files.

    GET  /cod/reconciliation?date=2024-05-01[&partner=jnt][&format=csv]
    POST /cod/settlements/{partner}?imported_by=...&filename=...   (body: the CSV as sent)
    GET  /cod/settlements[?partner=jnt]   GET /cod/settlements/{import_id}

The rules are in ``reconciliation.py``; this module only loads rows and answers.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from shared.http import Problem
from shared.logging import get_logger

from .domain import day_bounds, office_timezone
from .partners import CourierPartner
from .reconciliation import (
    CodReport,
    DailyReport,
    SettlementFileError,
    SettlementLine,
    ShipmentRow,
    match_settlement,
    parse_settlement_csv,
    reconcile,
    to_csv,
)
from .webhooks import BodyTooLarge, read_capped

log = get_logger(__name__)
router = APIRouter(tags=["COD reconciliation"])

# The day's shipments: delivered that day, or never delivered with their first COD report that day.
_DAY_SHIPMENTS = """
SELECT request_id, waybill, status, cod_fee, delivered_at FROM shipments
WHERE partner = $1 AND delivered_at >= $2 AND delivered_at < $3
UNION
SELECT s.request_id, s.waybill, s.status, s.cod_fee, s.delivered_at FROM shipments s
WHERE s.partner = $1 AND s.delivered_at IS NULL AND s.waybill IN (
    SELECT c.waybill FROM partner_callbacks c
    WHERE c.partner = $1 AND c.kind = 'cod_collected' AND c.occurred_at >= $2 AND c.occurred_at < $3
      AND NOT EXISTS (SELECT 1 FROM partner_callbacks e WHERE e.partner = $1
                      AND e.waybill = c.waybill AND e.kind = 'cod_collected' AND e.occurred_at < $2))
"""
_UNKNOWN_LINES = """
SELECT l.* FROM settlement_lines l WHERE l.partner = $1 AND l.paid_at >= $2 AND l.paid_at < $3
  AND NOT EXISTS (SELECT 1 FROM shipments s WHERE s.partner = $1 AND s.waybill = l.waybill)
"""


def _line(r: asyncpg.Record) -> SettlementLine:
    return SettlementLine(r["waybill"], r["amount"], r["paid_at"], r["line_no"], r["import_id"])


async def daily_report(
    conn: asyncpg.Connection, partner: str, day: date, utc_offset_hours: float
) -> DailyReport:
    start, end = day_bounds(day, office_timezone(utc_offset_hours))
    ships = await conn.fetch(_DAY_SHIPMENTS, partner, start, end)
    waybills = [s["waybill"] for s in ships]
    reports = await conn.fetch(
        "SELECT waybill, partner_event_id, cod_amount, occurred_at, times_received"
        " FROM partner_callbacks WHERE partner = $1 AND kind = 'cod_collected'"
        " AND waybill = ANY($2::text[])",
        partner,
        waybills,
    )
    settled = await conn.fetch(
        "SELECT * FROM settlement_lines WHERE partner = $1 AND waybill = ANY($2::text[])",
        partner,
        waybills,
    )
    unknown = await conn.fetch(_UNKNOWN_LINES, partner, start, end)
    imported = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM settlement_lines WHERE partner = $1"
        " AND paid_at >= $2 AND paid_at < $3)",
        partner,
        start,
        end,
    )
    return reconcile(
        partner,
        day,
        [ShipmentRow(str(s["request_id"]), s["waybill"], s["status"], s["cod_fee"],
                     s["delivered_at"]) for s in ships],
        [CodReport(r["waybill"], r["partner_event_id"], r["cod_amount"], r["occurred_at"],
                   r["times_received"]) for r in reports],
        [_line(r) for r in settled],
        [_line(r) for r in unknown],
        settlement_imported=bool(imported),
    )


@router.get("/cod/reconciliation")
async def reconciliation(
    request: Request,
    day: Annotated[date, Query(alias="date", description="The office day (local), YYYY-MM-DD")],
    partner: Literal["jnt", "pos"] | None = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """Deliveries, COD expected, reported and settled, and every discrepancy, per partner."""
    rt = request.app.state.rt
    names = [partner] if partner else sorted(rt.extras["partners"])
    async with rt.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        reports = [
            await daily_report(conn, name, day, rt.settings.office_utc_offset_hours)
            for name in names
        ]
    if format == "csv":
        filename = f"cod-{day.isoformat()}-{partner or 'all'}.csv"
        return Response(
            to_csv(reports),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return {
        "date": day.isoformat(),
        "as_of": datetime.now(UTC).isoformat(),
        "reports": [r.to_json() for r in reports],
    }


# --- settlement files ------------------------------------------------------------------------------


async def _reported(conn: asyncpg.Connection, partner: str, waybills: list[str]) -> dict[str, Any]:
    """Reported COD per waybill we shipped with ``partner`` (None: nothing reported)."""
    rows = await conn.fetch(
        "SELECT s.waybill, (SELECT sum(c.cod_amount) FROM partner_callbacks c"
        "   WHERE c.partner = $1 AND c.waybill = s.waybill AND c.kind = 'cod_collected') AS cod"
        " FROM shipments s WHERE s.partner = $1 AND s.waybill = ANY($2::text[])",
        partner,
        waybills,
    )
    return {r["waybill"]: r["cod"] for r in rows}


async def _import_view(conn: asyncpg.Connection, head: asyncpg.Record) -> dict[str, Any]:
    lines = [_line(r) for r in await conn.fetch(
        "SELECT * FROM settlement_lines WHERE import_id = $1 ORDER BY line_no", head["id"])]
    reported = await _reported(conn, head["partner"], sorted({ln.waybill for ln in lines}))
    return {
        "import_id": head["id"],
        "partner": head["partner"],
        "filename": head["filename"],
        "imported_by": head["imported_by"],
        "imported_at": head["imported_at"].isoformat(),
        "sha256": head["sha256"],
        **match_settlement(lines, reported),
    }


@router.post("/cod/settlements/{partner}", status_code=201)
async def import_settlement(
    partner: str,
    request: Request,
    imported_by: str = Query(min_length=1, max_length=100),
    filename: str | None = Query(default=None, max_length=200),
) -> Any:
    """Import a partner's COD settlement file (CSV, the partner's columns), whole or not at all.
    The same file imported again is the same import (matched on its sha256)."""
    rt = request.app.state.rt
    adapter: CourierPartner | None = rt.extras["partners"].get(partner)
    if adapter is None:
        raise Problem(404, f"Unknown partner {partner!r}", "Known: pos, jnt")
    try:
        raw = await read_capped(request, rt.settings.settlement_max_bytes)
    except BodyTooLarge:
        raise Problem(413, f"File larger than {rt.settings.settlement_max_bytes} bytes") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Problem(400, "File is not UTF-8 text") from None
    try:
        lines = parse_settlement_csv(text, adapter.settlement_format)
    except SettlementFileError as exc:
        raise Problem(422, "Berkas setoran tidak valid / Invalid settlement file",
                      "Tidak ada baris yang diimpor / nothing was imported", exc.errors) from None
    digest = hashlib.sha256(raw).hexdigest()
    async with rt.pool.acquire() as conn, conn.transaction():
        head = await conn.fetchrow(
            "INSERT INTO settlement_imports (partner, sha256, filename, imported_by, lines)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (partner, sha256) DO NOTHING RETURNING *",
            partner, digest, filename, imported_by, len(lines),
        )
        duplicate = head is None
        if head is None:
            head = await conn.fetchrow(
                "SELECT * FROM settlement_imports WHERE partner = $1 AND sha256 = $2",
                partner, digest,
            )
        else:
            await conn.executemany(
                "INSERT INTO settlement_lines (import_id, line_no, partner, waybill, amount,"
                " paid_at) VALUES ($1, $2, $3, $4, $5, $6)",
                [(head["id"], ln.line_no, partner, ln.waybill, ln.amount, ln.paid_at)
                 for ln in lines],
            )
        view = await _import_view(conn, head)
    log.info("settlement imported", partner=partner, import_id=head["id"], lines=len(lines),
             duplicate_file=duplicate)
    return {**view, "duplicate_file": duplicate}


@router.get("/cod/settlements")
async def list_settlements(request: Request, partner: str | None = None) -> Any:
    rows = await request.app.state.rt.pool.fetch(
        "SELECT id, partner, filename, imported_by, imported_at, lines FROM settlement_imports"
        " WHERE ($1::text IS NULL OR partner = $1) ORDER BY id DESC LIMIT 200",
        partner,
    )
    return {"imports": [{**dict(r), "imported_at": r["imported_at"].isoformat()} for r in rows]}


@router.get("/cod/settlements/{import_id}")
async def get_settlement(import_id: int, request: Request) -> Any:
    async with request.app.state.rt.pool.acquire() as conn:
        head = await conn.fetchrow("SELECT * FROM settlement_imports WHERE id = $1", import_id)
        if head is None:
            raise Problem(404, "Impor setoran tidak ditemukan / Settlement import not found")
        return await _import_view(conn, head)
