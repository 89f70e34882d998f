"""Courier's memory of the shipments it last wrote (services/courier/known_shipments.py)."""

from __future__ import annotations

import uuid

from services.courier.known_shipments import COLUMNS, KnownShipments, has_originals


def _row(status: str = "booked") -> dict[str, object]:
    return {c: False for c in COLUMNS} | {
        "request_id": uuid.uuid4(), "correlation_id": "c", "status": status, "failed_attempts": 0,
        "cod_fee": 20000, "has_originals": True, "address": "{}",  # extra columns are not kept
    }  # fmt: skip


def test_only_the_latest_waybills_are_kept() -> None:
    known = KnownShipments(max_entries=2)
    for waybill in ("A", "B", "C"):
        known.remember("jnt", waybill, _row())
    known.remember("jnt", "B", _row("handed_to_courier"))  # refreshed: now the newest
    known.remember("pos", "D", _row())
    assert len(known) == 2
    assert known.get("jnt", "A") is None and known.get("jnt", "C") is None
    entry = known.get("jnt", "B")
    assert entry is not None and entry["status"] == "handed_to_courier"
    assert set(entry) == {*COLUMNS, "seen"} and entry["seen"] is False
    assert known.get("jnt", "D") is None  # a waybill is the partner's: another partner's is not it


def test_an_entry_given_out_is_a_copy_and_forget_drops_it() -> None:
    known = KnownShipments()
    known.remember("jnt", "A", _row())
    entry = known.get("jnt", "A")
    assert entry is not None
    entry["status"] = "delivered"
    assert known.get("jnt", "A")["status"] == "booked"  # type: ignore[index]
    known.forget("jnt", "A")
    known.forget("jnt", "never")
    assert known.get("jnt", "A") is None


def test_has_originals_is_the_reads_comparison_with_an_empty_list() -> None:
    assert has_originals('["kk_asli"]') is True
    assert has_originals("[]") is False
    assert has_originals(None) is None
