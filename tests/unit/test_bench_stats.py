"""bench.stats: the partners' own time in a shipment's life, and the target's measure without it."""

from __future__ import annotations

import pytest

from bench.load import Lifecycle
from bench.stats import DL, partner_seconds, stage_latencies


def shipment(*callbacks: tuple[str, float | None, float | None]) -> dict[str, object]:
    return {"order_ref": "r", "booked_at_epoch": 100.0, "callbacks": [list(c) for c in callbacks]}


def test_the_partner_time_is_before_each_first_send_and_ends_at_the_delivery() -> None:
    life = shipment(("picked_up", 100.5, 101.0),  # 0.5 s after the booking arrived
                    ("cod_collected", 101.25, 103.0),  # 0.25 s after the pickup was taken
                    ("delivered", 103.5, 104.0),  # 0.5 s after the COD was taken
                    ("returned", 110.0, 111.0))  # after the delivery: not in the lifecycle
    assert partner_seconds(life) == pytest.approx(1.25)
    # the delivery before the COD: the COD does not count
    assert partner_seconds(shipment(("picked_up", 100.5, 101.0), ("delivered", 102.0, 102.5),
                                    ("cod_collected", 109.0, 110.0))) == pytest.approx(1.5)


def test_no_partner_time_until_the_delivery_was_sent() -> None:
    assert partner_seconds(shipment()) is None
    assert partner_seconds(shipment(("picked_up", 100.5, None))) is None
    assert partner_seconds(shipment(("picked_up", 100.5, 101.0), ("delivered", None, None))) is None
    # a clock step backwards never makes our own time longer
    assert partner_seconds(shipment(("picked_up", 99.0, 101.0), ("delivered", 101.0, 102.0))) == 0.0


def test_accepted_to_delivered_own_subtracts_each_lifecycles_partner_time() -> None:
    lives = [Lifecycle("a", "50/s", "62a", 9.9, 10.0), Lifecycle("b", "50/s", "62b", 9.9, 10.0),
             Lifecycle("c", "50/s", "62c", 9.9, 10.0)]
    seen = {"a": {DL: 11.0}, "b": {DL: 12.0}, "c": {DL: 13.0}}  # c: no partner time known
    stages = stage_latencies(lives, seen, {"a": 0.25, "b": 1.5})
    assert stages["accepted_to_delivered"]["n"] == 3
    own = stages["accepted_to_delivered_own"]
    assert own["n"] == 2 and own["max"] == 750.0  # a: 1000 - 250; b: 2000 - 1500 = 500
    assert stage_latencies(lives, seen)["accepted_to_delivered_own"] == {"n": 0}
