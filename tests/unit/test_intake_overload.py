"""Load shedding at the front door: the pure decision (overload.py) and the shedder's bookkeeping
(shedding.py) with fake signal readers: no Kafka, no database."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.intake import conversation as conv
from services.intake import shedding
from services.intake.overload import (
    CONSUMER_LAG,
    OPEN,
    OUTBOX_BACKLOG,
    Decision,
    Signals,
    Thresholds,
    consumer_lag,
    decide,
    retry_after,
)
from services.intake.settings import IntakeSettings
from services.intake.shedding import LoadShedder
from shared.http import Problem

LIMITS = Thresholds(lag_limit=2000, backlog_limit=1000, resume_ratio=0.5,
                    retry_after_min_s=5, retry_after_max_s=60)  # fmt: skip
SHEDDING = Decision(True, 5, CONSUMER_LAG, 1.1)


# ---- the decision -----------------------------------------------------------------------------


def test_under_the_limits_the_door_is_open() -> None:
    assert not decide(Signals(lag=0, backlog=0), LIMITS, OPEN).shedding
    assert not decide(Signals(lag=2000, backlog=1000), LIMITS, OPEN).shedding  # at, not above


def test_either_signal_above_its_limit_sheds_and_names_the_worst() -> None:
    by_lag = decide(Signals(lag=2001, backlog=10), LIMITS, OPEN)
    assert by_lag.shedding and by_lag.reason == CONSUMER_LAG and by_lag.retry_after_s == 5
    by_backlog = decide(Signals(lag=100, backlog=1500), LIMITS, OPEN)
    assert by_backlog.shedding and by_backlog.reason == OUTBOX_BACKLOG
    both = decide(Signals(lag=3000, backlog=4000), LIMITS, OPEN)  # 1.5x vs 4x
    assert both.reason == OUTBOX_BACKLOG and both.pressure == 4.0


def test_hysteresis_keeps_shedding_until_every_signal_is_at_the_resume_level() -> None:
    # between the resume level (1000 / 500) and the limit: it depends on the state before
    middle = Signals(lag=1500, backlog=100)
    assert not decide(middle, LIMITS, OPEN).shedding
    assert decide(middle, LIMITS, SHEDDING).shedding
    assert decide(Signals(lag=100, backlog=700), LIMITS, SHEDDING).shedding  # backlog holds it
    assert not decide(Signals(lag=1000, backlog=500), LIMITS, SHEDDING).shedding


def test_one_sample_series_does_not_flap() -> None:
    lags = [500, 1900, 2100, 1800, 1200, 2050, 1400, 990, 1500, 1990, 2001]
    state, states = OPEN, []
    for lag in lags:
        state = decide(Signals(lag=lag, backlog=0), LIMITS, state)
        states.append(state.shedding)
    assert states == [False, False, True, True, True, True, True, False, False, False, True]


def test_an_unreadable_signal_neither_starts_nor_holds_shedding() -> None:
    assert not decide(Signals(lag=None, backlog=None), LIMITS, OPEN).shedding
    assert not decide(Signals(lag=None, backlog=None), LIMITS, SHEDDING).shedding
    # Kafka away while shedding on lag: only the backlog counts now
    assert not decide(Signals(lag=None, backlog=10), LIMITS, SHEDDING).shedding
    assert decide(Signals(lag=None, backlog=1001), LIMITS, OPEN).reason == OUTBOX_BACKLOG


def test_a_limit_of_zero_switches_its_signal_off() -> None:
    no_lag = Thresholds(lag_limit=0, backlog_limit=1000)
    assert not decide(Signals(lag=10**9, backlog=0), no_lag, OPEN).shedding
    assert decide(Signals(lag=10**9, backlog=1001), no_lag, OPEN).reason == OUTBOX_BACKLOG
    off = Thresholds(lag_limit=0, backlog_limit=0)
    assert not off.enabled
    assert decide(Signals(lag=10**9, backlog=10**9), off, SHEDDING) == OPEN


def test_retry_after_grows_with_the_overload_between_floor_and_cap() -> None:
    assert retry_after(0.6, LIMITS) == 5  # still shedding under the limit (hysteresis): floor
    assert retry_after(1.01, LIMITS) == 5
    assert retry_after(1.5, LIMITS) == 8  # 7.5, rounded
    assert retry_after(3.0, LIMITS) == 15
    assert retry_after(100.0, LIMITS) == 60
    assert decide(Signals(lag=6000, backlog=0), LIMITS, OPEN).retry_after_s == 15


@given(
    lag=st.one_of(st.none(), st.integers(0, 10**7)),
    backlog=st.one_of(st.none(), st.integers(0, 10**7)),
    was=st.booleans(),
    lag_limit=st.integers(0, 10**5),
    backlog_limit=st.integers(0, 10**5),
    ratio=st.floats(0, 0.99),
)
def test_decision_invariants(
    lag: int | None, backlog: int | None, was: bool, lag_limit: int, backlog_limit: int,
    ratio: float,
) -> None:  # fmt: skip
    limits = Thresholds(lag_limit, backlog_limit, ratio, 2, 30)
    previous = SHEDDING if was else OPEN
    d = decide(Signals(lag, backlog), limits, previous)
    if d.shedding:
        assert 2 <= d.retry_after_s <= 30 and d.reason in (CONSUMER_LAG, OUTBOX_BACKLOG)
    else:
        assert d.retry_after_s == 0 and d.reason is None
    over = (lag_limit and lag is not None and lag > lag_limit) or (
        backlog_limit and backlog is not None and backlog > backlog_limit
    )
    if over:
        assert d.shedding  # above a limit always sheds, whatever the state before
    if not was:
        assert d.shedding == bool(over)  # and from open, only then


def test_thresholds_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Thresholds(lag_limit=-1, backlog_limit=0)
    with pytest.raises(ValueError):
        Thresholds(lag_limit=1, backlog_limit=1, resume_ratio=1.0)
    with pytest.raises(ValueError):
        Thresholds(lag_limit=1, backlog_limit=1, retry_after_min_s=10, retry_after_max_s=5)
    with pytest.raises(ValueError):
        IntakeSettings(intake_shed_retry_after_min_s=90, intake_shed_retry_after_max_s=60)


def test_consumer_lag_is_end_minus_committed_over_committed_partitions() -> None:
    committed = {("t", 0): 10, ("t", 1): 50, ("t", 2): 7}
    ends = {("t", 0): 15, ("t", 1): 50, ("t", 2): 20, ("t", 3): 999}  # 3: never committed
    assert consumer_lag(committed, ends) == 5 + 0 + 13
    assert consumer_lag({("t", 0): 30}, {("t", 0): 20}) == 0  # a stale end never goes negative
    assert consumer_lag({}, ends) == 0


def test_the_settings_defaults() -> None:
    s = IntakeSettings()
    assert s.shed_thresholds == Thresholds(2000, 1000, 0.5, 5, 60)
    assert s.intake_shed_groups == ["printing", "courier", "notify"]


# ---- the shedder, with fake readers ---------------------------------------------------------


class FakeLag:
    def __init__(self) -> None:
        self.groups = ["p-printing", "p-courier"]
        self.value: dict[str, int] | Exception = {"p-printing": 0, "p-courier": 0}
        self.reads = 0
        self.closed = 0

    async def read(self) -> dict[str, int]:
        self.reads += 1
        if isinstance(self.value, Exception):
            raise self.value
        return self.value

    async def close(self) -> None:
        self.closed += 1


def _shedder(backlog: list[Any], **settings: Any) -> tuple[LoadShedder, FakeLag]:
    async def read_backlog() -> int:
        value = backlog[0]
        if isinstance(value, Exception):
            raise value
        return int(value)

    fake = FakeLag()
    s = IntakeSettings(kafka_group_prefix="p-", intake_shed_groups=["printing", "courier"],
                       **settings)  # fmt: skip
    return LoadShedder(s, read_backlog, fake), fake  # type: ignore[arg-type]


async def test_the_slowest_group_counts_and_a_refusal_is_a_429(caplog: Any) -> None:
    shedder, fake = _shedder([0])
    assert shedder.refusal() is None
    fake.value = {"p-printing": 2500, "p-courier": 40}
    with caplog.at_level(logging.WARNING):
        await shedder.sample_once()
    assert shedder.shedding and shedder.signals == Signals(2500, 0)
    problem = shedder.refusal()
    assert isinstance(problem, Problem) and problem.status == 429
    assert problem.headers == {"Retry-After": "6"}  # 5 s x 1.25, rounded
    assert problem.extra == {"code": "overloaded"}
    assert " / " in problem.title and "6 detik" in problem.detail and "6 seconds" in problem.detail
    view = shedder.snapshot()
    assert view["shedding"] and view["reason"] == CONSUMER_LAG and view["refused"] == 1
    assert view["lag_by_group"] == {"p-printing": 2500, "p-courier": 40}
    fake.value = {"p-printing": 900, "p-courier": 0}
    await shedder.sample_once()
    assert not shedder.shedding and shedder.refusal() is None


async def test_kafka_away_is_warned_once_and_retried_with_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings: list[str] = []
    infos: list[str] = []
    monkeypatch.setattr(shedding.log, "warning", lambda event, **_: warnings.append(event))
    monkeypatch.setattr(shedding.log, "info", lambda event, **_: infos.append(event))
    shedder, fake = _shedder([0])
    fake.value = {"p-printing": 5000, "p-courier": 0}
    await shedder.sample_once()
    assert shedder.shedding
    fake.value = ConnectionError("broker away")
    for _ in range(4):
        await shedder.sample_once()
        shedder._kafka_retry_at = 0.0  # the pause is tested below; here, read every time
    assert not shedder.shedding and shedder.signals.lag is None
    assert [w for w in warnings if "cannot be read" in w] == [
        "load shedding: consumer lag cannot be read, not shedding on it"
    ]
    assert fake.closed == 4  # the clients are dropped after each failure
    # while Kafka is away the next attempt waits: no read in between
    await shedder.sample_once()
    reads = fake.reads
    await shedder.sample_once()
    assert fake.reads == reads
    shedder._kafka_retry_at = 0.0
    fake.value = {"p-printing": 1, "p-courier": 0}
    await shedder.sample_once()
    assert shedder.signals.lag == 1 and "load shedding: consumer lag readable again" in infos


async def test_the_backlog_alone_sheds_and_a_broken_database_does_not() -> None:
    backlog: list[Any] = [1001]
    shedder, _ = _shedder(backlog)
    await shedder.sample_once()
    assert shedder.shedding and shedder.decision.reason == OUTBOX_BACKLOG
    backlog[0] = OSError("database away")
    await shedder.sample_once()
    assert not shedder.shedding and shedder.signals.backlog is None


async def test_switched_off_nothing_is_read() -> None:
    shedder, fake = _shedder([10**6], intake_shed_lag_limit=0, intake_shed_backlog_limit=0)
    assert not shedder.enabled
    await shedder.sample_once()
    assert fake.reads == 0 and not shedder.shedding and shedder.signals == Signals(None, None)
    shedder, fake = _shedder([0], intake_shed_lag_limit=0)
    await shedder.sample_once()
    assert fake.reads == 0  # lag off: Kafka is not asked


async def test_a_stale_decision_no_longer_sheds(monkeypatch: pytest.MonkeyPatch) -> None:
    shedder, fake = _shedder([0])
    fake.value = {"p-printing": 10**5, "p-courier": 0}
    await shedder.sample_once()
    assert shedder.shedding
    assert shedder.sampled_at is not None
    later = shedder.sampled_at + shedding.STALE_AFTER_INTERVALS * 1.5 + shedding.KAFKA_TIMEOUT_S + 1
    monkeypatch.setattr(shedding.time, "monotonic", lambda: later)
    assert not shedder.shedding and shedder.refusal() is None and shedder.snapshot()["stale"]


def test_whatsapp_busy_keeps_the_draft() -> None:
    at_confirm = conv.Conversation(conv.CONFIRM, {"document_type": "ktp_el", "nik": "x"})
    step = conv.refused_busy(at_confirm, "ktp_el")
    assert step.conversation == at_confirm and step.action is None
    assert "sibuk" in step.replies[0] and "balas YA lagi" in step.replies[0]
