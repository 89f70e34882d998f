"""Notify's HTTP surface for ops: what was sent to whom and what became of it; retry a failure."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request

from shared.http import Problem

from .repository import retry_failed

router = APIRouter(tags=["notifications"])

_FIELDS = (
    "id", "event_type", "recipient", "status", "kind", "attempts", "template", "body", "wamid",
    "error", "wa_status", "wa_error",
)
_TIMES = ("occurred_at", "next_attempt_at", "sent_at", "wa_status_at")


def _notification(row: Any) -> dict[str, Any]:
    out = {k: row[k] for k in _FIELDS}
    out["event_id"] = str(row["event_id"])
    out["request_id"] = str(row["request_id"])
    for k in _TIMES:
        out[k] = row[k].isoformat() if row[k] else None
    return out


@router.get("/notifications")
async def list_notifications(
    request: Request,
    request_id: uuid.UUID | None = None,
    status: str | None = Query(None, description="pending, sending, unconfirmed, sent, failed"),
    wa_status: str | None = Query(
        None, description="what WhatsApp reported: sent, delivered, read, failed"
    ),
    limit: int = Query(1000, ge=1, le=10000),
) -> Any:
    rows = await request.app.state.rt.pool.fetch(
        "SELECT * FROM notifications WHERE ($1::uuid IS NULL OR request_id = $1)"
        " AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR wa_status = $3)"
        " ORDER BY id LIMIT $4",
        request_id,
        status,
        wa_status,
        limit,
    )
    return {"notifications": [_notification(r) for r in rows]}


@router.post("/notifications/{notification_id}/retry")
async def retry_notification(notification_id: int, request: Request) -> Any:
    """Send a failed (given up) notification again, once its cause is fixed."""
    rt = request.app.state.rt
    async with rt.pool.acquire() as conn:
        if not await retry_failed(conn, notification_id):
            raise Problem(409, "Only a failed notification can be retried",
                          f"{notification_id} (not failed, or its personal data was erased)")
    rt.waker("sender").set()
    return {"id": notification_id, "status": "pending"}
