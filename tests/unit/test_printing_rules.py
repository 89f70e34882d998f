"""Printing's pure rules: who may act on a job, claim leases, release, rejection texts, operators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from services.printing.domain import (
    REJECT_REASONS,
    Claim,
    ClaimedByAnother,
    UnsupportedStateTransition,
    decide,
    rejection_text,
    transition,
)
from services.printing.operators import operator_of
from shared.http import Problem

NOW = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
TTL = timedelta(minutes=30)
HELD_BY_ANI = Claim("ani", NOW - timedelta(minutes=5))
EXPIRED = Claim("ani", NOW - timedelta(minutes=31))
FREE = Claim(None, None)


@pytest.mark.parametrize("action", ["claim", "print", "reject", "release"])
def test_a_live_claim_keeps_every_other_operator_out(action: str) -> None:
    with pytest.raises(ClaimedByAnother) as info:
        decide("claimed", HELD_BY_ANI, action, "budi", NOW, TTL)
    assert info.value.holder == "ani"
    assert info.value.until == HELD_BY_ANI.expires_at(TTL)


@pytest.mark.parametrize("action", ["claim", "print", "reject"])
def test_an_expired_claim_frees_the_job(action: str) -> None:
    assert decide("claimed", EXPIRED, action, "budi", NOW, TTL).changed


def test_the_holder_may_renew_print_reject_or_release() -> None:
    assert decide("claimed", HELD_BY_ANI, "claim", "ani", NOW, TTL).state == "claimed"
    assert decide("claimed", HELD_BY_ANI, "print", "ani", NOW, TTL).state == "printed"
    assert decide("claimed", HELD_BY_ANI, "reject", "ani", NOW, TTL).state == "rejected"
    assert decide("claimed", HELD_BY_ANI, "release", "ani", NOW, TTL).state == "queued"


def test_a_queued_job_can_be_printed_or_rejected_directly_and_release_is_a_no_op() -> None:
    assert decide("queued", FREE, "print", "ani", NOW, TTL).changed
    assert decide("queued", FREE, "reject", "ani", NOW, TTL).changed
    assert not decide("queued", FREE, "release", "ani", NOW, TTL).changed


@pytest.mark.parametrize(
    ("state", "action"),
    [("printed", "claim"), ("printed", "reject"), ("rejected", "print"), ("rejected", "claim"),
     ("printed", "release"), ("rejected", "release")],
)
def test_finished_jobs_refuse_other_actions(state: str, action: str) -> None:
    with pytest.raises(UnsupportedStateTransition):
        decide(state, Claim("ani", NOW), action, "ani", NOW, TTL)


def test_repeating_the_finishing_action_is_a_no_op() -> None:
    assert not transition("printed", "print").changed
    assert not transition("rejected", "reject").changed


def test_claim_lease_boundaries() -> None:
    claim = Claim("ani", NOW)
    assert claim.live(NOW + TTL - timedelta(seconds=1), TTL)
    assert not claim.live(NOW + TTL, TTL)
    assert not FREE.live(NOW, TTL) and FREE.expires_at(TTL) is None


def test_rejection_text_names_the_category_and_the_operators_words() -> None:
    assert rejection_text(None, "foto buram") == "foto buram"
    text = rejection_text("wrong_requirement", "akta yang dilampirkan milik saudara")
    assert text == "berkas persyaratan tidak sesuai: akta yang dilampirkan milik saudara"
    assert set(REJECT_REASONS) >= {"missing_requirement", "wrong_requirement"}


def request_with(tokens: dict[str, str], authorization: str | None = None) -> Any:
    settings = SimpleNamespace(printing_operator_tokens=tokens)
    headers = {"authorization": authorization} if authorization else {}
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(rt=SimpleNamespace(
        settings=settings))), headers=headers)


def test_without_tokens_the_named_operator_is_trusted_and_required() -> None:
    assert operator_of(request_with({}), "budi") == "budi"
    with pytest.raises(Problem) as info:
        operator_of(request_with({}), None)
    assert info.value.status == 422


def test_with_tokens_the_token_names_the_operator() -> None:
    tokens = {"t-ani": "ani", "t-budi": "budi"}
    assert operator_of(request_with(tokens, "Bearer t-ani"), None) == "ani"
    assert operator_of(request_with(tokens, "bearer t-budi"), "budi") == "budi"
    for auth in (None, "Bearer nope", "Basic t-ani"):
        with pytest.raises(Problem) as info:
            operator_of(request_with(tokens, auth), "ani")
        assert info.value.status == 401
    with pytest.raises(Problem) as info:
        operator_of(request_with(tokens, "Bearer t-ani"), "budi")  # claims to be someone else
    assert info.value.status == 403
