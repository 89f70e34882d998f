"""The dead-letter tool's pure parts: names, what a replay carries, what ops see."""

from __future__ import annotations

import pytest

from shared.kafka.deadletters import (
    REPLAY_HEADER,
    DeadLetter,
    display_value,
    main,
    parse_ref,
    replay_headers,
    table,
)

VALUE = b'{"event_id": "e1", "data": {"applicant": {"nik": "3516014101900001", "phone": "+6281234567890"}}}'


def dead(**headers: str) -> DeadLetter:
    base = {"event_type": "document-printed", "event_id": "e1", "correlation_id": "c1",
            "dlq-reason": "invalid event: data.operator: Field required",
            "dlq-original-topic": "document-printed", "dlq-original-partition": "3",
            "dlq-original-offset": "41", "dlq-consumer": "courier"}
    return DeadLetter("courier", 2, 7, 1_767_225_600_000, b"r-1", VALUE,
                      tuple({**base, **headers}.items()))


def test_a_dead_letter_is_named_by_its_place() -> None:
    assert parse_ref("notify:3:17") == ("notify", 3, 17)
    assert dead().ref == "courier:2:7"
    for bad in ("notify:3", "mailer:1:2", "notify:a:1", "dlq.notify:1:2"):
        with pytest.raises(ValueError, match="not a dead letter"):
            parse_ref(bad)


def test_replay_keeps_the_original_headers_and_says_where_it_came_from() -> None:
    headers = dict(replay_headers(dead()))
    assert headers == {"event_type": b"document-printed", "event_id": b"e1",
                       "correlation_id": b"c1", REPLAY_HEADER: b"courier:2:7"}


def test_summary_for_the_listing() -> None:
    summary = dead().summary()
    assert summary["origin"] == "document-printed[3]@41"
    assert summary["at"] == "2026-01-01T00:00:00Z" and summary["kind"] == "consume"
    sent = dead(**{"dlq-kind": "whatsapp-send"})
    assert sent.summary()["kind"] == "whatsapp-send"
    listing = table([summary])
    assert listing.splitlines()[0].split() == ["REF", "AT", "ORIGIN", "CONSUMER", "KIND", "REASON"]
    assert "courier:2:7" in listing and "Field required" in listing


def test_values_are_shown_masked_unless_raw() -> None:
    shown = display_value(VALUE, raw=False)
    assert "3516014101900001" not in shown and "3516********0001" in shown
    assert "81234567890" not in shown
    assert "3516014101900001" in display_value(VALUE, raw=True)
    assert display_value(b"\x00garbage", raw=False) == "\x00garbage"
    assert display_value(None, raw=False) == "<no value>"


def test_replay_needs_something_to_replay(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bootstrap", "127.0.0.1:1", "replay"]) == 2
    assert main(["--bootstrap", "127.0.0.1:1", "replay", "--all"]) == 2
    assert "--service" in capsys.readouterr().err
