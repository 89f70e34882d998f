"""Courier's pure rules beyond the state machine: the partner breaker, the booking deadline,
service levels, originals, office days; and the webhook body cap."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from starlette.requests import Request

from services.courier.domain import (
    PartnerBreaker,
    Promise,
    booking_given_up,
    day_bounds,
    office_timezone,
    originals_after_delivery,
    originals_after_receipt,
    originals_overdue,
    percentile,
    service_level,
)
from services.courier.webhooks import BodyTooLarge, read_capped

# ---- a partner that is down ---------------------------------------------------------------------


def test_breaker_opens_after_consecutive_transient_failures() -> None:
    breaker = PartnerBreaker(threshold=3, probe_start_s=1.0, probe_cap_s=8.0)
    assert breaker.capacity(0.0, 16) == 16
    breaker.record_failure(0.0, "HTTP 503", probe=False)
    breaker.record_failure(0.1, "HTTP 503", probe=False)
    assert breaker.state(0.1) == "closed"
    breaker.record_failure(0.2, "HTTP 503", probe=False)
    assert breaker.state(0.2) == "open" and breaker.capacity(0.2, 16) == 0
    assert breaker.seconds_to_probe(0.2) == pytest.approx(1.0)
    assert breaker.state(1.2) == "half_open" and breaker.capacity(1.2, 16) == 1


def test_a_success_in_between_resets_the_count() -> None:
    breaker = PartnerBreaker(threshold=2)
    breaker.record_failure(0.0, "timeout", probe=False)
    assert not breaker.record_success()
    breaker.record_failure(1.0, "timeout", probe=False)
    assert breaker.state(1.0) == "closed"


def test_failed_probes_back_off_to_a_cap_and_a_success_closes() -> None:
    breaker = PartnerBreaker(threshold=1, probe_start_s=1.0, probe_cap_s=4.0)
    breaker.record_failure(0.0, "HTTP 503", probe=False)
    intervals = []
    now = 0.0
    for _ in range(4):
        now += breaker.seconds_to_probe(now)
        assert breaker.state(now) == "half_open"
        breaker.record_failure(now, "timeout", probe=True)
        intervals.append(breaker.probe_interval_s)
    assert intervals == [2.0, 4.0, 4.0, 4.0]
    assert breaker.last_error == "timeout"
    # failures of a batch sent before the breaker opened do not push the next probe further
    breaker.record_failure(now, "late straggler", probe=False)
    assert breaker.probe_interval_s == 4.0
    assert breaker.record_success()  # recovered: the caller releases the backlog
    assert breaker.state(now) == "closed" and breaker.failures == 0


def test_bookings_are_retried_until_the_deadline() -> None:
    since = datetime(2024, 5, 1, tzinfo=UTC)
    assert not booking_given_up(since, since + timedelta(hours=47), timedelta(hours=48))
    assert booking_given_up(since, since + timedelta(hours=48), timedelta(hours=48))


# ---- service levels -----------------------------------------------------------------------------

READY = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
PROMISE = Promise(min_days=2, max_days=4)


def level(handed_h: float | None, delivered_h: float | None, now_h: float, returned: bool = False):
    def h(x: float | None) -> datetime | None:
        return None if x is None else READY + timedelta(hours=x)

    return service_level(READY, h(handed_h), h(delivered_h), returned, READY + timedelta(hours=now_h),
                         PROMISE)


def test_service_level_states_along_the_promise() -> None:
    assert level(None, None, 10).state == "on_track"
    assert level(5, None, 49).state == "at_risk"
    late = level(5, None, 100)
    assert late.state == "late" and late.late and late.late_by_s == 4 * 3600
    assert level(5, 90, 200).state == "on_time"
    delivered_late = level(5, 99, 200)
    assert delivered_late.state == "delivered_late" and delivered_late.late_by_s == 3 * 3600
    assert level(5, None, 200, returned=True).state == "returned"
    assert level(5, 96, 200).state == "on_time"  # exactly at the promise is on time


def test_service_level_measures_each_leg() -> None:
    measured = level(6, 30, 40)
    assert measured.ready_to_handed_s == 6 * 3600
    assert measured.handed_to_delivered_s == 24 * 3600
    assert measured.ready_to_delivered_s == 30 * 3600
    assert measured.due_at == READY + timedelta(days=4)
    assert level(None, None, 1).handed_to_delivered_s is None


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 90) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(n) for n in range(1, 11)], 90) == 9.0


# ---- originals ----------------------------------------------------------------------------------


def test_originals_after_delivery_and_receipt() -> None:
    assert originals_after_delivery(True) == "with_courier"
    assert originals_after_delivery(False) == "not_collected"
    assert originals_after_delivery(None) == "unconfirmed"
    assert originals_after_receipt([]) == "received"
    assert originals_after_receipt(["KK lama (asli)"]) == "received_incomplete"


def test_originals_are_overdue_only_while_outstanding_and_past_due() -> None:
    due = datetime(2024, 5, 8, tzinfo=UTC)
    later = due + timedelta(seconds=1)
    assert originals_overdue("with_courier", due, later)
    assert originals_overdue("unconfirmed", due, later)
    assert not originals_overdue("with_courier", due, due)
    assert not originals_overdue("received", due, later)
    assert not originals_overdue("not_collected", due, later)  # listed apart, as attention
    assert not originals_overdue("with_courier", None, later)


# ---- office days --------------------------------------------------------------------------------


def test_an_office_day_is_local_midnight_to_midnight() -> None:
    start, end = day_bounds(date(2024, 5, 1), office_timezone(7))
    assert start == datetime(2024, 4, 30, 17, 0, tzinfo=UTC)
    assert end - start == timedelta(days=1)
    wita, _ = day_bounds(date(2024, 5, 1), office_timezone(8))
    assert wita == datetime(2024, 4, 30, 16, 0, tzinfo=UTC)


# ---- webhook bodies -----------------------------------------------------------------------------


def streamed(chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or []}
    return Request(scope, receive)


async def test_a_body_is_refused_as_soon_as_it_passes_the_cap() -> None:
    assert await read_capped(streamed([b"ab", b"cd"]), 4) == b"abcd"
    with pytest.raises(BodyTooLarge):  # chunked: no length to trust, counted as it comes
        await read_capped(streamed([b"abc", b"de", b"never read"]), 4)
    with pytest.raises(BodyTooLarge):  # declared too large: refused before reading
        await read_capped(streamed([b""], [(b"content-length", b"999999")]), 4)
