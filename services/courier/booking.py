"""The booking worker: books every ``to_book`` shipment with its partner, COD = the shipping fee.

Rows are claimed for a while (``booking_claimed_until``) so several instances share the work and a
crash only delays a booking. Partners deduplicate on our order reference (the request id), so a
booking retried after a crash or timeout never creates a second shipment. A partner that is down
gets its bookings retried with backoff; the other partner's bookings go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING

import asyncpg

from shared.db.pool import TRANSIENT_DB_ERRORS
from shared.logging import get_logger

from .domain import booking_backoff
from .partners import Address, BookingRequest, CourierPartner, PartnerError

if TYPE_CHECKING:
    from shared.runtime import Runtime

log = get_logger(__name__)

_CLAIM = """
UPDATE shipments SET booking_claimed_until = now() + make_interval(secs => $2)
WHERE request_id IN (
    SELECT request_id FROM shipments
    WHERE status = 'to_book' AND next_booking_at <= now()
      AND (booking_claimed_until IS NULL OR booking_claimed_until < now())
    ORDER BY next_booking_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING *
"""

DOCUMENT_LABELS = {
    "kk": "KK",
    "ktp_el": "KTP-el",
    "kia": "KIA",
}


def booking_request(row: asyncpg.Record) -> BookingRequest:
    # The label names the document type only: never a NIK on a courier label.
    label = DOCUMENT_LABELS.get(row["document_type"], row["document_type"].replace("_", " "))
    return BookingRequest(
        order_ref=str(row["request_id"]),
        cod_amount=row["cod_fee"],
        recipient_name=row["recipient_name"],
        recipient_phone=row["recipient_phone"],
        address=Address(**json.loads(row["address"])),
        item_description=f"Dokumen kependudukan: {label}",
    )


async def booking_worker(rt: "Runtime") -> None:
    wake = rt.waker("booking")
    partners: dict[str, CourierPartner] = rt.extras["partners"]
    limit = asyncio.Semaphore(rt.settings.booking_concurrency)
    while True:
        wake.clear()
        try:
            rows = await rt.pool.fetch(_CLAIM, rt.settings.booking_concurrency * 2, rt.settings.booking_claim_s)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("booking worker cannot reach the database", error=repr(exc))
            await asyncio.sleep(1.0)
            continue
        if not rows:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), 1.0)
            continue

        async def book(row: asyncpg.Record) -> None:
            async with limit:
                await book_one(rt, partners[row["partner"]], row)

        try:
            await asyncio.gather(*(book(r) for r in rows))
        except TRANSIENT_DB_ERRORS as exc:
            # the claim expires and the booking is retried; the partner dedupes on order_ref
            log.warning("booking result not stored, will retry", error=repr(exc))
            await asyncio.sleep(1.0)
        except Exception:  # noqa: BLE001 - a bug must not stop every future booking
            log.exception("booking worker error")
            await asyncio.sleep(1.0)


async def book_one(rt: "Runtime", partner: CourierPartner, row: asyncpg.Record) -> None:
    request_id = row["request_id"]
    try:
        booking = await partner.book(booking_request(row))
    except PartnerError as exc:
        attempts = row["booking_attempts"] + 1
        if exc.transient:
            delay = booking_backoff(
                attempts, rt.settings.booking_retry_start_s, rt.settings.booking_retry_cap_s
            )
            await rt.pool.execute(
                "UPDATE shipments SET booking_attempts = $2, booking_error = $3,"
                " next_booking_at = now() + make_interval(secs => $4),"
                " booking_claimed_until = NULL, updated_at = now() WHERE request_id = $1",
                request_id,
                attempts,
                exc.reason,
                delay,
            )
            log.warning(
                "booking failed, will retry",
                request_id=str(request_id),
                partner=partner.name,
                attempts=attempts,
                retry_in_s=delay,
                reason=exc.reason,
            )
        else:
            await rt.pool.execute(
                "UPDATE shipments SET status = 'booking_failed', booking_attempts = $2,"
                " booking_error = $3, booking_claimed_until = NULL, updated_at = now()"
                " WHERE request_id = $1",
                request_id,
                attempts,
                exc.reason,
            )
            log.error(
                "partner refused the booking",
                request_id=str(request_id),
                partner=partner.name,
                reason=exc.reason,
            )
        return
    await rt.pool.execute(
        "UPDATE shipments SET status = 'booked', waybill = $2, booked_at = now(),"
        " booking_attempts = booking_attempts + 1, booking_error = NULL,"
        " booking_claimed_until = NULL, updated_at = now()"
        " WHERE request_id = $1 AND status = 'to_book'",
        request_id,
        booking.waybill,
    )
    log.info(
        "shipment booked",
        request_id=str(request_id),
        correlation_id=row["correlation_id"],
        partner=partner.name,
        waybill=booking.waybill,
    )
