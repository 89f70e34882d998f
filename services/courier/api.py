"""Ops' view of shipments: where each one is, failed bookings, anomalies."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request

from shared.http import Problem
from shared.privacy import mask_phone

router = APIRouter(tags=["shipments"])

_FIELDS = (
    "status", "partner", "waybill", "booking_attempts", "booking_error", "cod_fee",
    "cod_amount_collected", "documents_collected", "failed_attempts",
)


def _shipment(row: Any) -> dict[str, Any]:
    out = {"request_id": str(row["request_id"]), **{k: row[k] for k in _FIELDS}}
    out["recipient_phone"] = mask_phone(row["recipient_phone"]) if row["recipient_phone"] else None
    for k in ("booked_at", "handed_at", "cod_paid_at", "delivered_at"):
        out[k] = row[k].isoformat() if row[k] else None
    return out


@router.get("/shipments")
async def list_shipments(
    request: Request, status: str | None = None, limit: int = Query(100, ge=1, le=1000)
) -> Any:
    rows = await request.app.state.rt.pool.fetch(
        "SELECT * FROM shipments WHERE ($1::text IS NULL OR status = $1)"
        " ORDER BY created_at LIMIT $2",
        status,
        limit,
    )
    return {"shipments": [_shipment(r) for r in rows]}


@router.get("/shipments/{request_id}")
async def get_shipment(request_id: uuid.UUID, request: Request) -> Any:
    pool = request.app.state.rt.pool
    row = await pool.fetchrow("SELECT * FROM shipments WHERE request_id = $1", request_id)
    if row is None:
        raise Problem(404, "Pengiriman tidak ditemukan / Shipment not found")
    anomalies = await pool.fetch(
        "SELECT detail, recorded_at FROM shipment_anomalies WHERE request_id = $1 ORDER BY id",
        request_id,
    )
    return {
        **_shipment(row),
        "anomalies": [{"detail": a["detail"], "at": a["recorded_at"].isoformat()} for a in anomalies],
    }
