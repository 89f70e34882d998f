"""The jobs this process just claimed for an operator, as claimed: an action's read, skipped.

Every action on one job reads the job, decides, and writes only if the job's state and claim are
still as read (``api._act``: a compare-and-set). The operator who takes a stack
(``claim-next``) or one job (``claim``) marks each printed (or rejects, or releases it) next, and
the job is then exactly as the claim's statement returned it, unless something happened since.
So the claim's rows are kept, and the next action on a job decides on its kept row and goes
straight to the compare-and-set: one statement instead of two, on every printed document.

A kept row is a hint (``shared.remembered``) and is used once: the compare-and-set checks it
against the database as it checks a read. Only a write is taken from it; when the kept row leads
to anything else (the job changed meanwhile, a refusal, a no-op, a used document number), the job
is read and decided again, so every refusal an operator sees is decided on a fresh read, as
before. Another printing instance, a lease run out, a restart: the action just reads.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import asyncpg

from shared.remembered import Remembered

if TYPE_CHECKING:
    from shared.runtime import Runtime

# A few dozen operators holding stacks of at most 100 (ClaimNextBody.limit) each; ~1 KiB a row
MAX_ENTRIES = 5_000


def claimed_jobs(rt: Runtime) -> Remembered[uuid.UUID, asyncpg.Record]:
    jobs: Remembered[uuid.UUID, asyncpg.Record] = rt.extras.setdefault(
        "claimed_jobs", Remembered(MAX_ENTRIES)
    )
    return jobs
