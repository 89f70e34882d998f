"""Load shedding at intake's front door, in process on real PostgreSQL and Kafka.

A downstream consumer group (``KAFKA_GROUP_PREFIX`` + printing) is made to lag behind on
``request-registered``: the sampler sees it, registrations get 429 problem+json with
``Retry-After``, the WhatsApp conversation keeps its draft and says the system is busy; once the
group catches up, registrations are accepted again. The state can also be set directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.intake import shedding
from services.intake.overload import CONSUMER_LAG, Signals
from services.intake.settings import IntakeSettings
from services.intake.shedding import LoadShedder
from shared.contracts import topics
from tests.integration.test_intake_front_door import (
    OPERATOR,
    Intake,
    conversation_texts,
    converse,
    new_wa_id,
    running_intake,
)
from tests.support.infra import seed_group_at_end

pytestmark = pytest.mark.integration

LAG_LIMIT = 3


@pytest.fixture(scope="module")
async def intake(ns: str) -> AsyncIterator[Intake]:
    async with running_intake(
        ns, intake_shed_lag_limit=LAG_LIMIT, intake_shed_sample_interval_s=0.2
    ) as running:
        yield running


async def _shedder(intake: Intake) -> LoadShedder:
    for _ in range(100):
        shedder = shedding.shedder_of(intake.rt)
        if shedder is not None:
            return shedder
        await asyncio.sleep(0.05)
    raise AssertionError("the load sampler did not start")


async def _until(intake: Intake, check: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0
                 ) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        state = (await intake.http.get("/health")).json()["load_shedding"]
        if check(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"load shedding state never matched: {state}")
        await asyncio.sleep(0.1)


def _walk_in(intake: Intake) -> dict[str, Any]:
    body = intake.body() | {"via": "walk_in"}
    body.pop("channel", None)
    return body


def _assert_shed(r: Any) -> int:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    wait = int(r.headers["retry-after"])
    problem = r.json()
    assert problem["status"] == 429 and problem["code"] == "overloaded"
    assert problem["title"] == "Layanan sedang sibuk / Service busy"
    assert f"{wait} detik" in problem["detail"] and f"{wait} seconds" in problem["detail"]
    return wait


async def test_registrations_are_accepted_while_the_pipeline_keeps_up(intake: Intake) -> None:
    state = await _until(intake, lambda s: s["sampled_at"] is not None)
    assert state["enabled"] and not state["shedding"] and state["lag_limit"] == LAG_LIMIT
    prefix = intake.settings.kafka_group_prefix
    # groups that never committed (none run in this test) count nothing
    assert state["lag_by_group"] == {f"{prefix}printing": 0, f"{prefix}courier": 0,
                                     f"{prefix}notify": 0}  # fmt: skip
    assert (await intake.register(intake.body())).status_code == 201


async def test_shedding_set_directly_answers_429_and_lifting_it_201(intake: Intake) -> None:
    shedder = await _shedder(intake)
    sample = shedder.sample_once
    shedder.sample_once = _paused  # type: ignore[method-assign]
    try:
        await asyncio.sleep(0.3)  # a sample already under way finishes first
        decision = shedder.apply(Signals(lag=LAG_LIMIT * 4, backlog=0))
        assert decision.shedding and decision.reason == CONSUMER_LAG
        r = await intake.register(intake.body())
        assert _assert_shed(r) == decision.retry_after_s == 20  # 5 s x 4
        # before validation and authentication: nothing is spent on a shed request
        assert (await intake.http.post("/requests", json={"x": 1})).status_code == 429
        # the counter is not shed: the applicant is standing there
        r = await intake.http.post("/operator/requests", json=_walk_in(intake), headers=OPERATOR)
        assert r.status_code == 201, r.text
        # tracking and the rest stay open
        assert (await intake.http.get("/tracking/KTM-7QX2-94HD?phone_last4=0000")).status_code \
            == 404
        state = (await intake.http.get("/health")).json()["load_shedding"]
        assert state["shedding"] and state["retry_after_s"] == 20 and state["refused"] >= 2
        shedder.apply(Signals(lag=0, backlog=0))
        assert (await intake.register(intake.body())).status_code == 201
    finally:
        shedder.sample_once = sample  # type: ignore[method-assign]


async def _paused() -> None:
    return None


async def test_a_lagging_downstream_group_sheds_until_it_catches_up(intake: Intake, ns: str) -> None:
    group = f"{intake.settings.kafka_group_prefix}printing"
    topic = ns + topics.REQUEST_REGISTERED
    await seed_group_at_end(group, [topic])
    await _until(intake, lambda s: s["lag_by_group"] and s["lag_by_group"][group] == 0)
    # a WhatsApp applicant reaches the summary before the pipeline falls behind
    wa_id = new_wa_id()
    nik = intake.body()["applicant"]["nik"]
    intake.secrets.add(nik)
    texts = conversation_texts(nik)
    assert texts[-1] == "YA"
    await converse(intake, wa_id, texts[:-1])

    for _ in range(LAG_LIMIT + 1):  # printing consumes none of them: it falls behind
        assert (await intake.register(intake.body())).status_code == 201
    state = await _until(intake, lambda s: s["shedding"])
    assert state["reason"] == CONSUMER_LAG and state["lag_by_group"][group] == LAG_LIMIT + 1
    assert state["consumer_lag"] == LAG_LIMIT + 1
    assert _assert_shed(await intake.register(intake.body())) == state["retry_after_s"]

    # WhatsApp: Meta gets its 200, the applicant a polite "busy", the draft waits
    replies = await converse(intake, wa_id, ["YA"])
    assert "sedang sibuk" in replies[-1] and "balas YA lagi" in replies[-1]
    [conv] = await intake.fetch("SELECT state FROM wa_conversations WHERE wa_id = $1", wa_id)
    assert conv["state"] == "confirm"
    assert await intake.fetch("SELECT 1 FROM requests WHERE applicant_nik = $1", nik) == []

    await seed_group_at_end(group, [topic])  # printing catches up
    state = await _until(intake, lambda s: not s["shedding"])
    assert state["lag_by_group"][group] == 0
    assert (await intake.register(intake.body())).status_code == 201
    replies = await converse(intake, wa_id, ["YA"])
    assert "terdaftar" in replies[-1]
    assert len(await intake.fetch("SELECT 1 FROM requests WHERE applicant_nik = $1", nik)) == 1


async def test_kafka_away_means_no_shedding_on_lag_and_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(shedding.log, "warning", lambda event, **_: warnings.append(event))

    async def no_backlog() -> int:
        return 0

    settings = IntakeSettings(kafka_bootstrap_servers="127.0.0.1:1", intake_shed_lag_limit=1)
    shedder = LoadShedder(settings, no_backlog)
    try:
        for _ in range(3):
            decision = await shedder.sample_once()
            shedder._kafka_retry_at = 0.0  # ask Kafka each time, not after the pause
            assert not decision.shedding and shedder.signals == Signals(None, 0)
        assert warnings == ["load shedding: consumer lag cannot be read, not shedding on it"]
        assert shedder.snapshot()["lag_by_group"] is None
    finally:
        await shedder.lag_reader.close()
