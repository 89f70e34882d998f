"""Retention (UU PDP No. 27/2022: personal data is deleted when its purpose ends).

A job's purpose ends when it is printed or rejected. ``PERSONAL_DATA_RETENTION_DAYS`` (90) after
that, the applicant's name and NIK and the operator's free-text reject reason (it may quote
them) are erased; the job stays: status, document number, operator, times, reject code, and its
audit trail (``print_job_actions``: operators and outcomes, no personal data). Old dead letters
(raw events, NIK included) are deleted too. The runner is every service's: ``shared/retention.py``.
"""

from __future__ import annotations

from shared import retention
from shared.retention import DEAD_LETTERS, Erasure
from shared.runtime import Runtime

PRINT_JOBS = Erasure(
    "print_jobs_erased",
    """
    UPDATE print_jobs SET applicant_name = NULL, applicant_nik = NULL, reject_reason = NULL,
        personal_data_erased_at = now()
    WHERE request_id IN (
        SELECT request_id FROM print_jobs
        WHERE status IN ('printed', 'rejected') AND personal_data_erased_at IS NULL
          AND updated_at < $1
        ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    """,
)

ERASURES = [PRINT_JOBS, DEAD_LETTERS]


async def retention_loop(rt: Runtime) -> None:
    await retention.retention_loop(rt, ERASURES)
