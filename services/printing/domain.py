"""The print job's state machine. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass


class UnsupportedStateTransition(Exception):
    def __init__(self, current: str, action: str) -> None:
        super().__init__(f"cannot {action} a job that is {current}")
        self.current = current
        self.action = action


# action -> states it may start from -> state it leads to
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "claim": (frozenset({"queued", "claimed"}), "claimed"),
    "print": (frozenset({"queued", "claimed"}), "printed"),
    "reject": (frozenset({"queued", "claimed"}), "rejected"),
}


@dataclass(frozen=True)
class Outcome:
    state: str
    changed: bool  # False: the same action re-applied, a no-op


def transition(current: str, action: str) -> Outcome:
    sources, target = TRANSITIONS[action]
    if current == target and action != "claim":
        return Outcome(current, False)
    if current not in sources:
        raise UnsupportedStateTransition(current, action)
    return Outcome(target, True)
