"""Notify's HTTP surface: what was sent for a request (ops)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["notifications"])


@router.get("/notifications")
async def list_notifications(request: Request, request_id: uuid.UUID | None = None,
                             status: str | None = None) -> Any:
    rows = await request.app.state.rt.pool.fetch(
        "SELECT id, request_id, event_type, status, attempts, template, body, wamid, error,"
        " sent_at FROM notifications WHERE ($1::uuid IS NULL OR request_id = $1)"
        " AND ($2::text IS NULL OR status = $2) ORDER BY id LIMIT 1000",
        request_id,
        status,
    )
    return {
        "notifications": [
            {**dict(r), "request_id": str(r["request_id"]),
             "sent_at": r["sent_at"].isoformat() if r["sent_at"] else None}
            for r in rows
        ]
    }
