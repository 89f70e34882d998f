"""The jobs this process just claimed for an operator, as claimed: an action's read, skipped.

Every action on one job reads the job, decides, and writes only if the job's state and claim are
still as read (``api._act``: a compare-and-set). The operator who takes a stack
(``claim-next``) or one job (``claim``) marks each printed (or rejects, or releases it) next, and
the job is then exactly as the claim's statement returned it, unless something happened since.
So the claim's rows are kept, and the next action on a job decides on its kept row and goes
straight to the compare-and-set: one statement instead of two, on every printed document.

A kept row (the columns the decision reads, not the applicant's data) is a hint
(``shared.remembered``) and is used once: the compare-and-set checks it
against the database as it checks a read. Only a write is taken from it; when the kept row leads
to anything else (the job changed meanwhile, a refusal, a no-op, a used document number), the job
is read and decided again, so every refusal an operator sees is decided on a fresh read, as
before. Another printing instance, a lease run out, a restart: the action just reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.remembered import Remembered

if TYPE_CHECKING:
    from shared.runtime import Runtime

# A few dozen operators holding stacks of at most 100 (ClaimNextBody.limit) each; ~0.5 KiB a row
MAX_ENTRIES = 5_000

# What an action's decision and compare-and-set read of the job (api._act, api._update, the
# actions' apply): its state and claim, and what its event carries. Not the applicant's name or
# NIK: those stay in the database, not in this process's memory.
COLUMNS = ("request_id", "correlation_id", "status", "claimed_by", "claimed_at",
           "document_number", "operator")  # fmt: skip


class ClaimedJobs(Remembered[uuid.UUID, dict[str, Any]]):
    def keep(self, row: Mapping[str, Any]) -> None:
        """``row`` (a print_jobs row as a claim's statement returned it) kept for its next
        action."""
        self.put(row["request_id"], {c: row[c] for c in COLUMNS})


def claimed_jobs(rt: Runtime) -> ClaimedJobs:
    jobs = rt.extras.get("claimed_jobs")
    if jobs is None:
        jobs = rt.extras["claimed_jobs"] = ClaimedJobs(MAX_ENTRIES)
    return jobs  # type: ignore[no-any-return]
