"""COD reconciliation per partner per office day (pure: rows in, report out; no I/O).

A shipment belongs to the office day it was delivered (or, never delivered, the day its COD was
reported); every COD report for it counts there, whenever it arrived. For each shipment:

- expected: the shipping fee, once delivered (COD may carry nothing else: UU 24/2013 Pasal 79A);
- reported: the sum of the partner's distinct COD reports (its own event ids);
- settled: the sum of the lines of the partner's settlement files with its waybill.

Discrepancies are listed one by one, never netted out: a missing COD next to a double report is two
findings, not a balanced day. A callback the partner sent twice (same event id) is counted once and
still reported, so finance can check the partner's settlement does not count it twice.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from .partners.base import SettlementFormat

DiscrepancyKind = Literal[
    "missing_cod",  # delivered, no COD reported
    "amount_mismatch",  # a COD report with an amount other than the fee
    "duplicate_cod_callback",  # the same COD callback received more than once (counted once)
    "duplicate_cod_report",  # more than one distinct COD report for one shipment
    "cod_without_delivery",  # COD reported for a shipment that was not delivered
    "settlement_amount_mismatch",  # settled amount differs from the reported one
    "settled_twice",  # the waybill appears on more than one settlement line
    "not_settled",  # a settlement for the day was imported, without this reported COD
    "settlement_unknown_waybill",  # a settlement line for a waybill we never shipped with them
]


@dataclass(frozen=True)
class ShipmentRow:
    request_id: str
    waybill: str
    status: str
    cod_fee: int
    delivered_at: datetime | None


@dataclass(frozen=True)
class CodReport:
    waybill: str
    event_id: str  # the partner's own id of the COD callback
    amount: int
    occurred_at: datetime
    times_received: int = 1


@dataclass(frozen=True)
class SettlementLine:
    waybill: str
    amount: int
    paid_at: datetime | None
    line_no: int = 0
    import_id: int | None = None


@dataclass(frozen=True)
class Discrepancy:
    kind: DiscrepancyKind
    waybill: str
    request_id: str | None
    expected: int | None
    reported: int | None
    detail: str


@dataclass(frozen=True)
class ShipmentReconciliation:
    request_id: str
    waybill: str
    status: str
    delivered_at: datetime | None
    cod_expected: int
    cod_reported: int
    cod_reports: int
    cod_settled: int | None
    discrepancies: list[str]


@dataclass(frozen=True)
class DailyReport:
    partner: str
    day: date
    deliveries: int
    cod_expected: int
    cod_reported: int
    cod_settled: int
    settlement_imported: bool
    duplicate_callbacks_ignored: int
    shipments: list[ShipmentReconciliation] = field(default_factory=list)
    discrepancies: list[Discrepancy] = field(default_factory=list)
    unknown_settlement: list[SettlementLine] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "partner": self.partner,
            "date": self.day.isoformat(),
            "deliveries": self.deliveries,
            "cod_expected": self.cod_expected,
            "cod_reported": self.cod_reported,
            "cod_settled": self.cod_settled,
            "difference": self.cod_reported - self.cod_expected,
            "settlement_imported": self.settlement_imported,
            "duplicate_callbacks_ignored": self.duplicate_callbacks_ignored,
            "discrepancies": [asdict(d) for d in self.discrepancies],
            "shipments": [
                {**asdict(s), "delivered_at": _iso(s.delivered_at)} for s in self.shipments
            ],
        }


CSV_COLUMNS = (
    "date", "partner", "request_id", "waybill", "status", "delivered_at", "cod_expected",
    "cod_reported", "cod_reports", "cod_settled", "discrepancies",
)


_NEVER = datetime.max.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def to_csv(reports: Iterable[DailyReport]) -> str:
    """One line per shipment (and per unknown settlement line); amounts in whole rupiah."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for report in reports:
        day = report.day.isoformat()
        for s in report.shipments:
            writer.writerow([
                day, report.partner, s.request_id, s.waybill, s.status, _iso(s.delivered_at) or "",
                s.cod_expected, s.cod_reported, s.cod_reports,
                "" if s.cod_settled is None else s.cod_settled, ";".join(s.discrepancies),
            ])
        for line in report.unknown_settlement:
            writer.writerow([
                day, report.partner, "", line.waybill, "unknown", "", 0, 0, 0, line.amount,
                "settlement_unknown_waybill",
            ])
    return out.getvalue()


def _rupiah(amount: int) -> str:
    return "Rp " + f"{amount:,}".replace(",", ".")


def reconcile(
    partner: str,
    day: date,
    shipments: list[ShipmentRow],
    reports: list[CodReport],
    settlements: list[SettlementLine],
    unknown_settlement: list[SettlementLine] | None = None,
    settlement_imported: bool = False,
) -> DailyReport:
    """The day's report. ``reports`` and ``settlements`` are those of the day's shipments'
    waybills; ``unknown_settlement`` the day's settlement lines whose waybill we do not know."""
    reports_of: dict[str, list[CodReport]] = defaultdict(list)
    for report in reports:
        reports_of[report.waybill].append(report)
    settled_of: dict[str, list[SettlementLine]] = defaultdict(list)
    for line in settlements:
        settled_of[line.waybill].append(line)
    unknown_settlement = unknown_settlement or []
    imported = settlement_imported or bool(settlements) or bool(unknown_settlement)

    found: list[Discrepancy] = []
    lines: list[ShipmentReconciliation] = []
    for s in sorted(shipments, key=lambda r: (r.delivered_at or _NEVER, r.waybill)):
        mine = sorted(reports_of[s.waybill], key=lambda r: (r.occurred_at, r.event_id))
        paid = settled_of[s.waybill]
        kinds = _shipment_findings(s, mine, paid, imported)
        found += kinds
        lines.append(
            ShipmentReconciliation(
                request_id=s.request_id,
                waybill=s.waybill,
                status=s.status,
                delivered_at=s.delivered_at,
                cod_expected=s.cod_fee if s.delivered_at else 0,
                cod_reported=sum(r.amount for r in mine),
                cod_reports=len(mine),
                cod_settled=sum(p.amount for p in paid) if paid else None,
                discrepancies=sorted({d.kind for d in kinds}),
            )
        )
    for line in unknown_settlement:
        found.append(Discrepancy(
            "settlement_unknown_waybill", line.waybill, None, None, line.amount,
            f"settlement line {line.line_no} pays {_rupiah(line.amount)} for a waybill"
            f" never shipped with {partner}",
        ))
    return DailyReport(
        partner=partner,
        day=day,
        deliveries=sum(1 for s in shipments if s.delivered_at),
        cod_expected=sum(line.cod_expected for line in lines),
        cod_reported=sum(line.cod_reported for line in lines),
        cod_settled=sum(line.cod_settled or 0 for line in lines),
        settlement_imported=imported,
        duplicate_callbacks_ignored=sum(r.times_received - 1 for r in reports),
        shipments=lines,
        discrepancies=found,
        unknown_settlement=unknown_settlement,
    )


def _shipment_findings(
    s: ShipmentRow, reports: list[CodReport], paid: list[SettlementLine], imported: bool
) -> list[Discrepancy]:
    found: list[Discrepancy] = []

    def add(kind: DiscrepancyKind, expected: int | None, reported: int | None, detail: str) -> None:
        found.append(Discrepancy(kind, s.waybill, s.request_id, expected, reported, detail))

    reported = sum(r.amount for r in reports)
    if s.delivered_at and not reports:
        add("missing_cod", s.cod_fee, 0, "delivered, but the partner reported no COD collected")
    if reports and not s.delivered_at:
        add("cod_without_delivery", 0, reported,
            f"COD reported for a shipment that is {s.status}, not delivered")
    for r in reports:
        if r.amount != s.cod_fee:
            add("amount_mismatch", s.cod_fee, r.amount,
                f"COD collected {_rupiah(r.amount)} differs from the fee {_rupiah(s.cod_fee)}")
        if r.times_received > 1:
            add("duplicate_cod_callback", s.cod_fee, r.amount,
                f"COD callback {r.event_id} received {r.times_received} times, counted once")
    if len(reports) > 1:
        add("duplicate_cod_report", s.cod_fee, reported,
            f"{len(reports)} distinct COD reports for one shipment, {_rupiah(reported)} in all")
    if len(paid) > 1:
        add("settled_twice", reported, sum(p.amount for p in paid),
            f"on {len(paid)} settlement lines")
    if paid and sum(p.amount for p in paid) != reported:
        add("settlement_amount_mismatch", reported, sum(p.amount for p in paid),
            f"settled {_rupiah(sum(p.amount for p in paid))}, reported {_rupiah(reported)}")
    if imported and reports and not paid:
        add("not_settled", reported, 0, "reported collected, missing from the settlement")
    return found


# --- settlement files -----------------------------------------------------------------------------

# Whole rupiah as partners write it: "20000", "20000.00", "20.000" (Indonesian thousands), "Rp 20.000"
_PLAIN = re.compile(r"^\d+(?:[.,]0{1,2})?$")
_THOUSANDS = re.compile(r"^\d{1,3}(?:\.\d{3})+$")


class SettlementFileError(ValueError):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(f"{len(errors)} bad lines")
        self.errors = errors


def parse_amount(text: str) -> int:
    value = text.strip().removeprefix("Rp").strip()
    if _THOUSANDS.match(value):
        return int(value.replace(".", ""))
    if _PLAIN.match(value):
        return int(re.split(r"[.,]", value)[0])
    raise ValueError(f"not a whole rupiah amount: {text!r}")


def _parse_time(text: str, fmt: SettlementFormat) -> datetime | None:
    if not text.strip():
        return None
    if fmt.time_format is None:
        moment = datetime.fromisoformat(text.strip())
    else:
        moment = datetime.strptime(text.strip(), fmt.time_format)
    if moment.tzinfo is None:
        if fmt.timezone is None:
            raise ValueError(f"time without a UTC offset: {text!r}")
        moment = moment.replace(tzinfo=fmt.timezone)
    return moment.astimezone(UTC)


def parse_settlement_csv(text: str, fmt: SettlementFormat) -> list[SettlementLine]:
    """Every line of a partner's settlement file, or SettlementFileError listing every bad line
    (a file is imported whole or not at all)."""
    sample = text[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), dialect=dialect)
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    missing = [c for c in (fmt.waybill, fmt.amount) if c not in header]
    if missing:
        raise SettlementFileError(
            [{"line": "1", "message": f"missing column(s) {', '.join(missing)}; have {header}"}]
        )
    lines: list[SettlementLine] = []
    errors: list[dict[str, str]] = []
    for number, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values()):
            continue
        waybill = (row.get(fmt.waybill) or "").strip()
        try:
            if not waybill:
                raise ValueError(f"empty {fmt.waybill}")
            amount = parse_amount(row.get(fmt.amount) or "")
            paid_at = _parse_time(row.get(fmt.paid_at) or "", fmt) if fmt.paid_at else None
        except ValueError as exc:
            errors.append({"line": str(number), "message": str(exc)})
            continue
        lines.append(SettlementLine(waybill, amount, paid_at, number))
    if errors:
        raise SettlementFileError(errors)
    return lines


def match_settlement(
    lines: list[SettlementLine], reported: dict[str, int | None]
) -> dict[str, Any]:
    """What an imported settlement file says against what the partner reported: ``reported``
    maps each of the file's waybills that we shipped with the partner to its reported COD sum
    (None: no COD reported)."""
    per_waybill: dict[str, list[SettlementLine]] = defaultdict(list)
    for line in lines:
        per_waybill[line.waybill].append(line)
    unknown = sorted(w for w in per_waybill if w not in reported)
    mismatches = []
    for waybill, paid in sorted(per_waybill.items()):
        if waybill in reported:
            settled = sum(p.amount for p in paid)
            if settled != (reported[waybill] or 0):
                mismatches.append(
                    {"waybill": waybill, "settled": settled, "reported": reported[waybill]}
                )
    return {
        "lines": len(lines),
        "total_settled": sum(line.amount for line in lines),
        "matched": sum(len(p) for w, p in per_waybill.items() if w in reported),
        "unknown_waybills": unknown,
        "settled_twice": sorted(w for w, p in per_waybill.items() if len(p) > 1),
        "amount_mismatches": mismatches,
    }
