"""COD reconciliation over one office day, through the partners' webhooks and settlement files.

The day is played in the past (forty days ago) so no other test's shipments fall in it. On J&T:
two clean deliveries, one with no COD reported, one with a wrong amount, one whose COD callback
came twice. The report must name exactly those three, and Pos's day must be clean.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from deploy.local.system import System
from sandbox.testing import SandboxControl
from tests.e2e import flow

pytestmark = pytest.mark.e2e

WIB = timezone(timedelta(hours=7))
DAY = (datetime.now(WIB) - timedelta(days=40)).date()


def at(hour: int, minute: int = 0) -> str:
    return datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=WIB).isoformat()


def life(cod: dict[str, Any] | None, minute: int) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"kind": "picked_up", "occurred_at": at(8, minute)}]
    if cod is not None:
        steps.append({"kind": "cod_collected", "occurred_at": at(13, minute)} | cod)
    steps.append({"kind": "delivered", "occurred_at": at(13, minute)})
    return steps


DAY_PLAN: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "clean-1": ("jnt", life({}, 1)),
    "clean-2": ("jnt", life({}, 2)),
    "missing": ("jnt", life(None, 3)),
    "wrong": ("jnt", life({"cod_amount": 25_000}, 4)),
    "duplicate": ("jnt", life({"duplicate": True}, 5)),
    "pos-clean": ("pos", life({}, 6)),
}


async def play(http: httpx.AsyncClient, system: System, sandbox: SandboxControl,
               partner: str, steps: list[dict[str, Any]]) -> str:
    answer = await flow.register(http, system, flow.applicant_body(random.Random(), partner))
    rid = str(answer["request_id"])
    await sandbox.script(rid, steps=steps)
    await flow.print_request(http, system, rid)
    await sandbox.wait_script_finished(rid)
    return rid


async def test_a_day_with_a_missing_cod_a_wrong_amount_and_a_duplicate_callback(
    system: System,
) -> None:
    courier = system.url("courier")
    async with httpx.AsyncClient(timeout=10) as http:
        sandbox = SandboxControl(http, system.url("sandbox"))
        rids = await asyncio.gather(*(play(http, system, sandbox, partner, steps)
                                      for partner, steps in DAY_PLAN.values()))
        rid = dict(zip(DAY_PLAN, rids, strict=True))
        waybill = {name: (await http.get(f"{courier}/shipments/{r}")).json()["waybill"]
                   for name, r in rid.items()}

        async def report(partner: str) -> dict[str, Any]:
            r = await http.get(f"{courier}/cod/reconciliation",
                               params={"date": DAY.isoformat(), "partner": partner})
            (only,) = r.json()["reports"]
            return dict(only)

        jnt = await report("jnt")
        findings = {(d["kind"], d["waybill"]) for d in jnt["discrepancies"]}
        assert findings == {
            ("missing_cod", waybill["missing"]),
            ("amount_mismatch", waybill["wrong"]),
            ("duplicate_cod_callback", waybill["duplicate"]),
        }
        assert len(jnt["discrepancies"]) == 3
        assert (jnt["deliveries"], jnt["cod_expected"], jnt["cod_reported"]) == (
            5, 100_000, 85_000)
        assert jnt["difference"] == -15_000 and jnt["duplicate_callbacks_ignored"] == 1
        wrong = next(d for d in jnt["discrepancies"] if d["kind"] == "amount_mismatch")
        assert (wrong["expected"], wrong["reported"]) == (20_000, 25_000)
        assert wrong["request_id"] == rid["wrong"]
        pos = await report("pos")
        assert (pos["deliveries"], pos["cod_expected"], pos["cod_reported"]) == (1, 20_000, 20_000)
        assert pos["discrepancies"] == []

        # J&T's settlement file for the day matches what J&T reported, line for line
        settlement = await sandbox.settlement("jnt", DAY.isoformat())
        imported = await http.post(
            f"{courier}/cod/settlements/jnt", content=settlement.encode(),
            params={"imported_by": "keuangan-e2e", "filename": f"jnt-{DAY}.csv"},
            headers={"content-type": "text/csv"})
        assert imported.status_code == 201, imported.text
        result = imported.json()
        assert (result["lines"], result["matched"], result["total_settled"]) == (4, 4, 85_000)
        assert result["unknown_waybills"] == [] and result["amount_mismatches"] == []
        again = await http.post(
            f"{courier}/cod/settlements/jnt", content=settlement.encode(),
            params={"imported_by": "keuangan-e2e"})
        assert again.json()["duplicate_file"] and again.json()["import_id"] == result["import_id"]
        settled = await report("jnt")
        assert settled["cod_settled"] == 85_000 and settled["settlement_imported"]
        assert {(d["kind"], d["waybill"]) for d in settled["discrepancies"]} == findings

        # a Pos file that pays less for one AWB and pays an AWB Pos never carried for us
        lines = (await sandbox.settlement("pos", DAY.isoformat())).splitlines()
        header, (line,) = lines[0], lines[1:]
        awb, order, _, paid_at = line.split(",")
        tampered = "\n".join([header, f"{awb},{order},18000,{paid_at}",
                              f"P000000000001,,20000,{paid_at}"]) + "\n"
        bad = (await http.post(f"{courier}/cod/settlements/pos", content=tampered.encode(),
                               params={"imported_by": "keuangan-e2e"})).json()
        assert bad["unknown_waybills"] == ["P000000000001"]
        assert bad["amount_mismatches"] == [{"waybill": awb, "settled": 18_000, "reported": 20_000}]
        pos = await report("pos")
        assert {(d["kind"], d["waybill"]) for d in pos["discrepancies"]} == {
            ("settlement_amount_mismatch", awb), ("settlement_unknown_waybill", "P000000000001")}

        # exports
        exported = await http.get(f"{courier}/cod/reconciliation",
                                  params={"date": DAY.isoformat(), "format": "csv"})
        unreadable = await http.post(f"{courier}/cod/settlements/jnt", content=b"billCode\nJX1\n",
                                     params={"imported_by": "keuangan-e2e"})
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    by_waybill = {r["waybill"]: r for r in rows}
    assert by_waybill[waybill["missing"]]["discrepancies"] == "missing_cod"
    assert by_waybill[waybill["wrong"]]["cod_reported"] == "25000"
    assert by_waybill[waybill["clean-1"]]["discrepancies"] == ""
    assert by_waybill[waybill["clean-1"]]["cod_settled"] == "20000"
    assert by_waybill["P000000000001"]["discrepancies"] == "settlement_unknown_waybill"
    assert len(rows) == 7  # 5 J&T + 1 Pos shipments + the unknown Pos settlement line
    assert unreadable.status_code == 422  # no codValue column: nothing imported
    print(f"\nreconciliation {DAY} jnt: deliveries={jnt['deliveries']} expected="
          f"{jnt['cod_expected']} reported={jnt['cod_reported']} settled={settled['cod_settled']}"
          f" discrepancies={sorted(k for k, _ in findings)}")
