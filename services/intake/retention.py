"""Retention (UU PDP No. 27/2022: personal data is deleted when its purpose ends).

Once a request is finished (delivered, returned to the office or rejected) and the retention
period (``PERSONAL_DATA_RETENTION_DAYS``) has passed, the applicant's name, NIK, phone and the
delivery address are erased; the lifecycle record stays: status, timeline, document type,
partner, fee, service date, tracking code and the phone's last 4 digits (for public tracking).
The same run deletes what only served a conversation or a rate limit, and old dead letters
(they hold raw events, NIK included). The runner (batches, one instance at a time, the loop) is
every service's: ``shared/retention.py``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared import retention
from shared.db.pool import Pool
from shared.retention import DEAD_LETTERS, Erasure
from shared.runtime import Runtime

from .settings import IntakeSettings

REQUESTS = Erasure(
    "requests_erased",
    """
    UPDATE requests SET
        applicant_name = NULL, applicant_nik = NULL, applicant_phone = NULL,
        delivery = jsonb_build_object('partner', delivery->'partner'),
        idempotency_key = NULL, body_hash = NULL,
        personal_data_erased_at = now(), updated_at = now()
    WHERE request_id IN (
        SELECT request_id FROM requests
        WHERE finished_at < $1 AND personal_data_erased_at IS NULL
        ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    """,
)


def erasures(s: IntakeSettings) -> list[Erasure]:
    ttl = timedelta(hours=s.conversation_ttl_hours)
    return [
        REQUESTS,
        Erasure("conversations_deleted", "DELETE FROM wa_conversations WHERE wa_id IN (SELECT wa_id"
                " FROM wa_conversations WHERE updated_at < $1 LIMIT $2)", after=ttl),
        Erasure("replies_deleted", "DELETE FROM wa_outbound WHERE id IN (SELECT id FROM wa_outbound"
                " WHERE status <> 'pending' AND created_at < $1 LIMIT $2)", after=ttl),
        Erasure("rate_limit_windows_deleted", "DELETE FROM rate_limit_hits WHERE (bucket,"
                " window_start) IN (SELECT bucket, window_start FROM rate_limit_hits"
                " WHERE window_start < $1 LIMIT $2)", after=timedelta(days=1)),
        # Meta redelivers a webhook for up to 7 days: its message ids are kept that long
        Erasure("inbound_ids_deleted", "DELETE FROM wa_inbound WHERE wamid IN (SELECT wamid"
                " FROM wa_inbound WHERE received_at < $1 LIMIT $2)",
                after=timedelta(days=s.inbound_dedup_days)),
        DEAD_LETTERS,
    ]


async def run_once(
    pool: Pool, settings: IntakeSettings, retention_days: float | None = None
) -> dict[str, Any]:
    days = settings.personal_data_retention_days if retention_days is None else retention_days
    return await retention.run_once(pool, settings.db_schema, erasures(settings), days)


async def retention_loop(rt: Runtime) -> None:
    await retention.retention_loop(rt, erasures(rt.settings))  # type: ignore[arg-type]
