"""When the front door sheds load (pure: no I/O).

Registrations cost every later stage work: printing, courier and notify each consume the event,
and notify calls WhatsApp once per lifecycle event. Offered more than the pipeline can do, a front
door that keeps accepting starves those stages and completed throughput collapses (the
"Overload" section of the performance notes). So intake refuses new registrations with a 429 and
``Retry-After`` while the pipeline is behind, measured by two signals sampled in the background
(``shedding.py``):

- **consumer lag**: how many events the slowest downstream consumer group (printing, courier,
  notify) has not yet committed, summed over its partitions;
- **outbox backlog**: intake's own ``request-registered`` events not yet published.

``decide`` turns the signals, the thresholds and whether intake is shedding now into the next
state, with hysteresis: shedding starts when a signal goes **above** its limit and stops only
when every signal is back **at or below** ``resume_ratio`` of its limit, so the door does not
flap open and shut around one value. A signal whose limit is 0 is off; a signal that could not
be read (``None``: Kafka or PostgreSQL away) neither starts nor holds shedding. The wait asked of
clients grows with how far over the limit the worst signal is, between a floor and a cap.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

CONSUMER_LAG = "consumer_lag"
OUTBOX_BACKLOG = "outbox_backlog"


@dataclass(frozen=True)
class Thresholds:
    lag_limit: int  # events behind, slowest downstream group; 0: not a signal
    backlog_limit: int  # unpublished outbox rows; 0: not a signal
    resume_ratio: float = 0.5  # shedding stops at or below this share of every limit
    retry_after_min_s: int = 5
    retry_after_max_s: int = 60

    def __post_init__(self) -> None:
        if self.lag_limit < 0 or self.backlog_limit < 0:
            raise ValueError("limits cannot be negative")
        if not 0 <= self.resume_ratio < 1:
            raise ValueError("resume_ratio must be in [0, 1)")
        if not 1 <= self.retry_after_min_s <= self.retry_after_max_s:
            raise ValueError("need 1 <= retry_after_min_s <= retry_after_max_s")

    @property
    def enabled(self) -> bool:
        return bool(self.lag_limit or self.backlog_limit)


@dataclass(frozen=True)
class Signals:
    lag: int | None  # None: could not be read
    backlog: int | None


@dataclass(frozen=True)
class Decision:
    shedding: bool
    retry_after_s: int = 0  # set when shedding
    reason: str | None = None  # the signal that is furthest over (when shedding)
    pressure: float = 0.0  # the worst signal as a share of its limit (1.0 = at the limit)


OPEN = Decision(False)


def _pressures(signals: Signals, limits: Thresholds) -> dict[str, float]:
    """Each readable signal that is switched on, as a share of its limit."""
    pressures: dict[str, float] = {}
    if limits.lag_limit and signals.lag is not None:
        pressures[CONSUMER_LAG] = signals.lag / limits.lag_limit
    if limits.backlog_limit and signals.backlog is not None:
        pressures[OUTBOX_BACKLOG] = signals.backlog / limits.backlog_limit
    return pressures


def retry_after(pressure: float, limits: Thresholds) -> int:
    """Seconds a refused client is asked to wait: the floor at the limit, growing in proportion
    to how far over it the pipeline is, never above the cap."""
    wanted = math.floor(limits.retry_after_min_s * max(pressure, 1.0) + 0.5)
    return max(limits.retry_after_min_s, min(limits.retry_after_max_s, wanted))


def decide(signals: Signals, limits: Thresholds, previous: Decision) -> Decision:
    """The next state of the front door from the latest signals and the current state."""
    pressures = _pressures(signals, limits)
    if not pressures:
        return OPEN  # nothing to go by (all off or unreadable): never shed blind
    reason, worst = max(pressures.items(), key=lambda kv: kv[1])
    bound = limits.resume_ratio if previous.shedding else 1.0
    # starting needs a signal strictly above its limit; staying needs one above the resume level
    if worst > bound:
        return Decision(True, retry_after(worst, limits), reason, worst)
    return Decision(False, 0, None, worst)


def consumer_lag(committed: Mapping[Hashable, int], ends: Mapping[Hashable, int]) -> int:
    """Events a group has not committed: end offset - committed offset, summed over the
    partitions it has committed on (a partition whose end is unknown counts nothing)."""
    return sum(max(0, ends[tp] - offset) for tp, offset in committed.items() if tp in ends)
