"""shared/remembered.py: the bounded memory of rows a process last wrote."""

from __future__ import annotations

import pytest

from shared.remembered import Remembered


def test_keeps_the_latest_entries_and_drops_the_least_recently_written() -> None:
    kept: Remembered[str, int] = Remembered(max_entries=2)
    kept.put("a", 1)
    kept.put("b", 2)
    kept.put("a", 10)  # written again: the most recent now
    kept.put("c", 3)
    assert len(kept) == 2 and "b" not in kept
    assert (kept.get("a"), kept.get("c")) == (10, 3)


def test_pop_uses_an_entry_once_and_forget_drops_it() -> None:
    kept: Remembered[str, int] = Remembered(max_entries=5)
    kept.put("a", 1)
    kept.put("b", 2)
    assert kept.pop("a") == 1 and kept.pop("a") is None
    kept.forget("b")
    kept.forget("never there")
    assert len(kept) == 0 and kept.get("b") is None


def test_a_memory_holds_at_least_one_entry() -> None:
    with pytest.raises(ValueError):
        Remembered(max_entries=0)


def test_printing_keeps_what_a_decision_reads_and_not_the_applicant() -> None:
    from services.printing.claimed_jobs import COLUMNS, ClaimedJobs

    row = {c: f"v-{c}" for c in COLUMNS} | {"applicant_name": "Sri", "applicant_nik": "3516..."}
    kept = ClaimedJobs(max_entries=3)
    kept.keep(row)
    entry = kept.pop("v-request_id")
    assert entry == {c: f"v-{c}" for c in COLUMNS}
