"""Printing queues every registered request."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.contracts import topics
from shared.contracts.events import Envelope, RequestRegistered
from shared.kafka.consumer import Handler


async def queue_job(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    data: RequestRegistered = event.data
    await conn.execute(
        """
        INSERT INTO print_jobs (request_id, tracking_code, document_type, applicant_name,
            applicant_nik, correlation_id, registered_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (request_id) DO NOTHING
        """,
        event.request_id,
        data.tracking_code,
        data.document_type.value,
        data.applicant.name,
        data.applicant.nik,
        event.correlation_id,
        event.occurred_at,
    )


def handlers() -> dict[str, Handler]:
    return {topics.REQUEST_REGISTERED: queue_job}
