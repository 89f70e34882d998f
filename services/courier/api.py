"""Ops' view of shipments: where each one is, bookings waiting for a partner, anomalies; and the
two ops actions on a shipment: retry a booking, cancel."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

import asyncpg
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shared.db.pool import Pool
from shared.http import Problem
from shared.logging import get_logger
from shared.privacy import mask_phone

from .booking import breakers_of
from .domain import Promise, originals_overdue, service_level
from .partners import CourierPartner, PartnerError

log = get_logger(__name__)
router = APIRouter(tags=["shipments"])

_FIELDS = (
    "status", "partner", "waybill", "booking_attempts", "booking_error", "cod_fee",
    "cod_amount_collected", "documents_collected", "failed_attempts", "last_failure_reason",
    "return_reason", "document_number", "originals_status", "cancel_reason",
)
_TIMES = (
    "printed_at", "to_book_since", "next_booking_at", "booked_at", "handed_at", "cod_paid_at",
    "delivered_at", "last_failed_at", "returned_at", "originals_due_at", "originals_received_at",
    "cancelled_at", "personal_data_erased_at",
)


def promise_of(request: Request) -> Promise:
    s = request.app.state.rt.settings
    return Promise(s.promise_min_days, s.promise_max_days)


def shipment_view(row: asyncpg.Record, promise: Promise, now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {"request_id": str(row["request_id"]), **{k: row[k] for k in _FIELDS}}
    out["recipient_phone"] = mask_phone(row["recipient_phone"]) if row["recipient_phone"] else None
    for k in _TIMES:
        out[k] = row[k].isoformat() if row[k] else None
    out["originals_overdue"] = originals_overdue(
        row["originals_status"], row["originals_due_at"], now
    )
    out["service_level"] = None
    if row["printed_at"] and row["status"] != "cancelled":
        level = service_level(row["printed_at"], row["handed_at"], row["delivered_at"],
                              row["returned"], now, promise)
        out["service_level"] = {
            "state": level.state,
            "late": level.late,
            "due_at": level.due_at.isoformat(),
            "ready_to_handed_h": _hours(level.ready_to_handed_s),
            "handed_to_delivered_h": _hours(level.handed_to_delivered_s),
            "late_by_h": _hours(level.late_by_s),
        }
    return out


async def shipment_or_404(
    conn: Pool | asyncpg.Connection, request_id: uuid.UUID, for_update: bool = False
) -> asyncpg.Record:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT * FROM shipments WHERE request_id = $1{lock}", request_id)
    if row is None:
        raise Problem(404, "Pengiriman tidak ditemukan / Shipment not found")
    return row


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


@router.get("/shipments")
async def list_shipments(
    request: Request,
    status: str | None = None,
    partner: Literal["jnt", "pos"] | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> Any:
    """Shipments, oldest first; ``status=to_book`` shows bookings waiting, with their attempts and
    last error, ``status=booking_failed`` those that wait for ops."""
    rows = await request.app.state.rt.pool.fetch(
        "SELECT * FROM shipments WHERE ($1::text IS NULL OR status = $1)"
        " AND ($2::text IS NULL OR partner = $2) ORDER BY created_at, request_id LIMIT $3 OFFSET $4",
        status,
        partner,
        limit,
        offset,
    )
    promise, now = promise_of(request), datetime.now(UTC)
    return {"shipments": [shipment_view(r, promise, now) for r in rows]}


@router.get("/shipments/{request_id}")
async def get_shipment(request_id: uuid.UUID, request: Request) -> Any:
    pool = request.app.state.rt.pool
    row = await shipment_or_404(pool, request_id)
    anomalies = await pool.fetch(
        "SELECT detail, recorded_at FROM shipment_anomalies WHERE request_id = $1 ORDER BY id",
        request_id,
    )
    callbacks = await pool.fetch(
        "SELECT partner_event_id, kind, occurred_at, cod_amount, times_received, received_at"
        " FROM partner_callbacks WHERE request_id = $1 ORDER BY received_at, partner_event_id",
        request_id,
    )
    return {
        **shipment_view(row, promise_of(request), datetime.now(UTC)),
        "requirement_documents": json.loads(row["requirement_documents"] or "[]"),
        "anomalies": [
            {"detail": a["detail"], "at": a["recorded_at"].isoformat()} for a in anomalies
        ],
        "callbacks": [
            {
                "partner_event_id": c["partner_event_id"],
                "kind": c["kind"],
                "occurred_at": c["occurred_at"].isoformat(),
                "cod_amount": c["cod_amount"],
                "times_received": c["times_received"],
                "received_at": c["received_at"].isoformat(),
            }
            for c in callbacks
        ],
    }


# --- bookings: what waits for which partner ------------------------------------------------------


@router.get("/ops/booking")
async def booking_status(request: Request) -> Any:
    """Per partner: is it answering (the breaker), what waits for it, what waits for ops."""
    rt = request.app.state.rt
    rows = await rt.pool.fetch(
        "SELECT partner, status, count(*) AS n, min(to_book_since) AS oldest,"
        " max(booking_attempts) AS max_attempts FROM shipments"
        " WHERE status IN ('to_book', 'booking_failed') GROUP BY partner, status"
    )
    now = time.monotonic()
    partners: dict[str, Any] = {}
    for name, breaker in breakers_of(rt).items():
        partners[name] = {
            "state": breaker.state(now),
            "consecutive_failures": breaker.failures,
            "last_error": breaker.last_error,
            "down_for_s": round(now - breaker.opened_at, 1) if breaker.opened_at else None,
            "next_probe_in_s": round(breaker.seconds_to_probe(now), 1)
            if breaker.next_probe_at else None,
            "to_book": 0,
            "oldest_waiting_since": None,
            "max_attempts": 0,
            "booking_failed": 0,
        }
    for r in rows:
        entry = partners.setdefault(r["partner"], {"to_book": 0, "booking_failed": 0})
        entry[r["status"]] = r["n"]
        if r["status"] == "to_book":
            entry["oldest_waiting_since"] = r["oldest"].isoformat() if r["oldest"] else None
            entry["max_attempts"] = r["max_attempts"]
    return {"partners": partners}


class OpsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    by: str = Field(min_length=1, max_length=100)
    reason: str | None = Field(default=None, max_length=500)


@router.post("/shipments/{request_id}/retry-booking")
async def retry_booking(request_id: uuid.UUID, body: OpsBody, request: Request) -> Any:
    """Book again now: a ``booking_failed`` shipment (after ops fixed the cause) or a ``to_book``
    one waiting for its next attempt. The partner dedupes on our order ref: never booked twice."""
    rt = request.app.state.rt
    row = await rt.pool.fetchrow(
        "UPDATE shipments SET status = 'to_book', next_booking_at = now(),"
        " to_book_since = CASE WHEN status = 'booking_failed' THEN now() ELSE to_book_since END,"
        " updated_at = now() WHERE request_id = $1 AND status IN ('to_book', 'booking_failed')"
        " RETURNING *",
        request_id,
    )
    if row is None:
        await _refuse(rt.pool, request_id, "retry the booking of")
    log.info("booking retry requested", request_id=str(request_id), by=body.by)
    rt.waker(f"booking:{row['partner']}").set()
    return shipment_view(row, promise_of(request), datetime.now(UTC))


_CANCELLABLE_HERE = ("awaiting_print", "awaiting_registration", "to_book", "booking_failed")


@router.post("/shipments/{request_id}/cancel")
async def cancel_shipment(request_id: uuid.UUID, body: OpsBody, request: Request) -> Any:
    """Cancel before pick-up: at the partner too when it was booked (refused after pick-up)."""
    rt = request.app.state.rt
    partners: dict[str, CourierPartner] = rt.extras["partners"]
    async with rt.pool.acquire() as conn, conn.transaction():
        row = await shipment_or_404(conn, request_id, for_update=True)
        if row["status"] == "cancelled":
            return shipment_view(row, promise_of(request), datetime.now(UTC))
        claimed = row["booking_claimed_until"]
        if row["status"] == "to_book" and claimed and claimed > datetime.now(UTC):
            raise Problem(409, "Sedang dipesan ke kurir / Booking in progress",
                          "Coba lagi sebentar lagi / try again in a moment",
                          headers={"Retry-After": "5"})
        if row["status"] == "booked":
            try:
                await partners[row["partner"]].cancel(row["waybill"])
            except PartnerError as exc:
                raise Problem(
                    409 if not exc.transient else 503,
                    "Kurir menolak pembatalan / The partner did not cancel",
                    exc.reason,
                ) from None
        elif row["status"] not in _CANCELLABLE_HERE:
            raise Problem(409, "Tidak dapat dibatalkan / Cannot be cancelled",
                          f"Pengiriman berstatus {row['status']} / the shipment is {row['status']}")
        row = await conn.fetchrow(
            "UPDATE shipments SET status = 'cancelled', cancelled_at = now(), cancel_reason = $2,"
            " originals_status = 'none', updated_at = now() WHERE request_id = $1 RETURNING *",
            request_id,
            f"{body.reason or 'dibatalkan'} ({body.by})",
        )
    log.info("shipment cancelled", request_id=str(request_id), by=body.by)
    return shipment_view(row, promise_of(request), datetime.now(UTC))


async def _refuse(pool: Pool, request_id: uuid.UUID, action: str) -> NoReturn:
    status = (await shipment_or_404(pool, request_id))["status"]
    raise Problem(409, "Tidak dapat dilakukan / Not allowed in the shipment's state",
                  f"Cannot {action} a shipment that is {status}")
