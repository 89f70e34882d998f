"""COD reconciliation rules: each discrepancy kind, settlement files, exports."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest

from services.courier.partners.jnt import JNT_SETTLEMENT
from services.courier.partners.pos import POS_SETTLEMENT
from services.courier.reconciliation import (
    CSV_COLUMNS,
    CodReport,
    DailyReport,
    SettlementFileError,
    SettlementLine,
    ShipmentRow,
    match_settlement,
    parse_amount,
    parse_settlement_csv,
    reconcile,
    to_csv,
)

DAY = date(2024, 5, 1)
AT = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)


def shipment(waybill: str, delivered: bool = True, status: str = "completed") -> ShipmentRow:
    return ShipmentRow(f"req-{waybill}", waybill, status, 20_000, AT if delivered else None)


def cod(waybill: str, amount: int = 20_000, event: str | None = None, times: int = 1) -> CodReport:
    return CodReport(waybill, event or f"cod-{waybill}", amount, AT, times)


def kinds(report: DailyReport) -> set[tuple[str, str]]:
    return {(d.kind, d.waybill) for d in report.discrepancies}


def test_a_clean_day_adds_up() -> None:
    report = reconcile("jnt", DAY, [shipment("A"), shipment("B")], [cod("A"), cod("B")], [])
    assert (report.deliveries, report.cod_expected, report.cod_reported) == (2, 40_000, 40_000)
    assert report.discrepancies == [] and report.duplicate_callbacks_ignored == 0
    assert not report.settlement_imported


def test_missing_wrong_and_duplicated_cod_are_each_named() -> None:
    report = reconcile(
        "jnt", DAY,
        [shipment("A"), shipment("M"), shipment("W"), shipment("U")],
        [cod("A"), cod("W", 25_000), cod("U", times=2)],
        [],
    )
    assert kinds(report) == {("missing_cod", "M"), ("amount_mismatch", "W"),
                             ("duplicate_cod_callback", "U")}
    assert (report.cod_expected, report.cod_reported) == (80_000, 65_000)
    assert report.duplicate_callbacks_ignored == 1
    line = {s.waybill: s for s in report.shipments}
    assert line["M"].discrepancies == ["missing_cod"] and line["A"].discrepancies == []


def test_two_distinct_reports_for_one_shipment_are_money_counted_twice() -> None:
    report = reconcile("pos", DAY, [shipment("A")], [cod("A", event="e1"), cod("A", event="e2")],
                       [])
    assert kinds(report) == {("duplicate_cod_report", "A")}
    assert report.cod_reported == 40_000


def test_cod_for_a_shipment_that_was_not_delivered() -> None:
    report = reconcile("pos", DAY, [shipment("R", delivered=False, status="returned_to_office")],
                       [cod("R")], [])
    assert kinds(report) == {("cod_without_delivery", "R")}
    assert report.cod_expected == 0 and report.deliveries == 0
    assert "returned_to_office" in report.discrepancies[0].detail


def test_settlement_findings() -> None:
    ships = [shipment("A"), shipment("B"), shipment("C")]
    reports = [cod("A"), cod("B"), cod("C")]
    paid = [SettlementLine("A", 20_000, AT, 2), SettlementLine("B", 15_000, AT, 3),
            SettlementLine("A", 20_000, AT, 4)]
    unknown = [SettlementLine("X", 20_000, AT, 5)]
    report = reconcile("jnt", DAY, ships, reports, paid, unknown)
    assert kinds(report) == {
        ("settled_twice", "A"), ("settlement_amount_mismatch", "A"),
        ("settlement_amount_mismatch", "B"), ("not_settled", "C"),
        ("settlement_unknown_waybill", "X"),
    }
    assert report.settlement_imported and report.cod_settled == 55_000


def test_without_any_settlement_nothing_is_unsettled() -> None:
    report = reconcile("jnt", DAY, [shipment("A")], [cod("A")], [])
    assert report.shipments[0].cod_settled is None and report.discrepancies == []


def test_csv_export_has_one_line_per_shipment_and_unknown_settlement_line() -> None:
    report = reconcile("jnt", DAY, [shipment("A"), shipment("M")], [cod("A")],
                       [SettlementLine("A", 20_000, AT, 2)], [SettlementLine("X", 5_000, AT, 3)])
    rows = list(csv.DictReader(io.StringIO(to_csv([report]))))
    assert tuple(rows[0]) == CSV_COLUMNS
    by = {r["waybill"]: r for r in rows}
    assert by["A"]["cod_settled"] == "20000" and by["A"]["discrepancies"] == ""
    assert by["M"]["discrepancies"] == "missing_cod"  # nothing reported: nothing to settle
    assert by["X"]["discrepancies"] == "settlement_unknown_waybill"
    assert report.to_json()["difference"] == -20_000


@pytest.mark.parametrize(
    ("text", "amount"),
    [("20000", 20_000), ("20000.00", 20_000), ("20000,00", 20_000), ("20.000", 20_000),
     ("Rp 20.000", 20_000), ("1.250.000", 1_250_000), (" 25000 ", 25_000)],
)
def test_amounts_as_partners_write_them(text: str, amount: int) -> None:
    assert parse_amount(text) == amount


@pytest.mark.parametrize("text", ["", "20000.50", "-20000", "2e4", "20.00.0", "abc"])
def test_amounts_that_are_not_whole_rupiah_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


def test_jnt_settlement_times_are_wib() -> None:
    text = "\ufeffbillCode,txlogisticId,codValue,payTime\nJX1,r1,20000,2024-05-01 13:00:00\n"
    (line,) = parse_settlement_csv(text, JNT_SETTLEMENT)
    assert line.waybill == "JX1" and line.amount == 20_000 and line.line_no == 2
    assert line.paid_at == datetime(2024, 5, 1, 6, 0, tzinfo=UTC)


def test_pos_settlement_semicolons_and_blank_lines() -> None:
    text = "awb;orderid;codvalue;paid_at\nP1;r1;20000;2024-05-01T06:00:00Z\n\nP2;r2;20.000;\n"
    lines = parse_settlement_csv(text, POS_SETTLEMENT)
    assert [(ln.waybill, ln.amount, ln.paid_at) for ln in lines] == [
        ("P1", 20_000, AT), ("P2", 20_000, None)]


def test_a_bad_file_is_refused_whole_with_every_bad_line() -> None:
    text = "awb,codvalue,paid_at\nP1,20000,2024-05-01T06:00:00Z\n,20000,\nP3,lots,\nP4,1,yesterday\n"
    with pytest.raises(SettlementFileError) as info:
        parse_settlement_csv(text, POS_SETTLEMENT)
    assert [e["line"] for e in info.value.errors] == ["3", "4", "5"]
    with pytest.raises(SettlementFileError) as info:
        parse_settlement_csv("awb,amount\nP1,1\n", POS_SETTLEMENT)
    assert "codvalue" in info.value.errors[0]["message"]
    with pytest.raises(SettlementFileError):  # J&T times carry no offset: WIB is assumed, Pos's must
        parse_settlement_csv("awb,codvalue,paid_at\nP1,1,2024-05-01 13:00:00\n", POS_SETTLEMENT)


def test_match_settlement_against_reported_cod() -> None:
    lines = [SettlementLine("A", 20_000, None, 2), SettlementLine("B", 18_000, None, 3),
             SettlementLine("X", 20_000, None, 4), SettlementLine("A", 20_000, None, 5)]
    result = match_settlement(lines, {"A": 20_000, "B": 20_000})
    assert result["matched"] == 3 and result["unknown_waybills"] == ["X"]
    assert result["settled_twice"] == ["A"]
    assert result["amount_mismatches"] == [
        {"waybill": "A", "settled": 40_000, "reported": 20_000},
        {"waybill": "B", "settled": 18_000, "reported": 20_000},
    ]
    assert result["total_settled"] == 78_000


def test_a_late_cod_report_still_counts_on_the_delivery_day() -> None:
    late = CodReport("A", "e1", 20_000, AT + timedelta(days=2))
    report = reconcile("jnt", DAY, [shipment("A")], [late], [])
    assert report.discrepancies == [] and report.cod_reported == 20_000
