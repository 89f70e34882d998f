"""The print job's rules: its state machine and who may act on it. No I/O here.

queued -> claimed (by one operator) -> printed | rejected; a claim may be released (back to queued).
A claim is a lease: after ``claim_ttl`` it no longer keeps other operators out, so a job claimed by
someone who went home is not stuck. Printing or rejecting a queued job claims it implicitly, in the
same row-locked transaction, so two operators can never both print or reject one request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


class UnsupportedStateTransition(Exception):
    def __init__(self, current: str, action: str) -> None:
        super().__init__(f"cannot {action} a job that is {current}")
        self.current = current
        self.action = action


class ClaimedByAnother(Exception):
    """Another operator holds a live claim on the job."""

    def __init__(self, holder: str, until: datetime) -> None:
        super().__init__(f"claimed by {holder} until {until.isoformat()}")
        self.holder = holder
        self.until = until


# action -> states it may start from -> state it leads to
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "claim": (frozenset({"queued", "claimed"}), "claimed"),
    "release": (frozenset({"claimed"}), "queued"),
    "print": (frozenset({"queued", "claimed"}), "printed"),
    "reject": (frozenset({"queued", "claimed"}), "rejected"),
}

# Why an operator sends a request back; the applicant reads the label on WhatsApp.
REJECT_REASONS: dict[str, str] = {
    "missing_requirement": "berkas persyaratan belum lengkap",
    "wrong_requirement": "berkas persyaratan tidak sesuai",
    "data_mismatch": "data permohonan tidak sesuai dengan database kependudukan",
    "duplicate_request": "permohonan yang sama sudah diajukan",
    "other": "perlu pemeriksaan lebih lanjut",
}


@dataclass(frozen=True)
class Outcome:
    state: str
    changed: bool  # False: the same action re-applied, a no-op


def transition(current: str, action: str) -> Outcome:
    sources, target = TRANSITIONS[action]
    if current == target and action != "claim":
        return Outcome(current, False)
    if action == "release" and current == "queued":
        return Outcome(current, False)
    if current not in sources:
        raise UnsupportedStateTransition(current, action)
    return Outcome(target, True)


@dataclass(frozen=True)
class Claim:
    holder: str | None
    claimed_at: datetime | None

    def expires_at(self, ttl: timedelta) -> datetime | None:
        return self.claimed_at + ttl if self.claimed_at else None

    def live(self, now: datetime, ttl: timedelta) -> bool:
        """Whether the claim still keeps other operators out. ``api._CLAIM_NEXT`` applies the same
        rule in SQL (``claimed_at <= now() - ttl`` is free) to pick a stack of jobs."""
        expires = self.expires_at(ttl)
        return self.holder is not None and expires is not None and now < expires


def decide(
    status: str, claim: Claim, action: str, operator: str, now: datetime, ttl: timedelta
) -> Outcome:
    """What ``operator`` doing ``action`` on a job leads to; raises when it may not.

    A live claim by someone else keeps everyone else out of claim, print, reject and release;
    an expired one does not (the job is free again).
    """
    if status == "claimed" and claim.holder != operator and claim.live(now, ttl):
        until = claim.expires_at(ttl)
        assert until is not None and claim.holder is not None
        raise ClaimedByAnother(claim.holder, until)
    return transition(status, action)


def rejection_text(reason_code: str | None, reason: str) -> str:
    """The reason the applicant is told: the category (when given) and the operator's words."""
    if reason_code is None:
        return reason
    return f"{REJECT_REASONS[reason_code]}: {reason}"
