"""bench.run: the ledger's indexes, which keep the per-second work of a step to what is new."""

from __future__ import annotations

from pathlib import Path

from bench.load import Lifecycle
from bench.run import Options, Run
from bench.stats import attach_messages


def accepted(run: Run, request_id: str, step: str, wa_id: str) -> Lifecycle:
    """What the generator does with an accepted request: the ledger, then its callbacks."""
    life = run.ledger[request_id] = Lifecycle(request_id, step, wa_id, 1.0, 1.1)
    run._index(request_id)  # the generator's on_accept callback
    return life


def test_a_steps_lifecycles_are_indexed_as_they_are_accepted(tmp_path: Path) -> None:
    run = Run(Options(rates=[50.0], out=tmp_path), tmp_path)
    a = accepted(run, "a", "50/s", "62811")
    accepted(run, "b", "100/s", "62812")
    c = accepted(run, "c", "50/s", "62813")
    assert run.lives("50/s") == [a, c]
    assert [life.request_id for life in run.lives("100/s")] == ["b"]
    assert run.lives("150/s") == []


def test_messages_are_filed_by_recipient_once_each(tmp_path: Path) -> None:
    run = Run(Options(rates=[50.0], out=tmp_path), tmp_path)
    a = accepted(run, "a", "50/s", "62811")
    b = accepted(run, "b", "50/s", "62812")
    known: set[str] = set()
    messages = [
        {"id": "m1", "wa_id": "62811", "template": "registered", "received_at_epoch": 2.0},
        {"id": "m2", "wa_id": "62812", "template": "registered", "received_at_epoch": 2.5},
        {"id": "m3", "wa_id": "62899", "template": "registered", "received_at_epoch": 3.0},  # not ours
    ]
    assert attach_messages(run._by_wa, messages, known) == 2
    # the next fetch overlaps the last (a margin before the newest): nothing is filed twice
    assert attach_messages(run._by_wa, [*messages[1:], {
        "id": "m4", "wa_id": "62811", "template": "printed", "received_at_epoch": 4.0}], known) == 1
    assert a.messages == {"registered": [2.0], "printed": [4.0]}
    assert b.messages == {"registered": [2.5]}
