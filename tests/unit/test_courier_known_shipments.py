"""Courier's memory of the shipments it last wrote (services/courier/known_shipments.py)."""

from __future__ import annotations

import re
import uuid

from services.courier.known_shipments import COLUMNS, KnownShipments, has_originals
from services.courier.webhooks import _READ


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
    assert has_originals(["kk_asli"]) is True  # already decoded (a jsonb codec)


def test_an_entry_has_the_columns_of_the_read_it_stands_in_for() -> None:
    """webhooks.apply_fact decides on an entry as on a row of its _READ: the same columns."""
    select_list = _READ.split("FROM shipments")[0].split("SELECT", 1)[1]
    names = [re.search(r"(\w+)$", item.strip()).group(1)  # type: ignore[union-attr]
             for item in select_list.split(",")]
    assert names == [*COLUMNS, "seen"]
