"""The booking worker: books every ``to_book`` shipment with its partner, COD = the shipping fee.

One loop per partner, each with its own concurrency and breaker (``domain.PartnerBreaker``), so a
partner that is down or hangs never holds up the other's bookings. Rows are claimed for a while
(``booking_claimed_until``) so several instances share the work and a crash only delays a booking.
Partners deduplicate on our order reference (the request id), so a booking retried after a crash or
a timeout never creates a second shipment.

Failures: a transient one (timeout, 5xx, 429) is retried with backoff until the booking has waited
``booking_give_up_after_h`` since it became bookable; a refusal, or that deadline, parks the
shipment as ``booking_failed`` with the reason, for ops to fix and retry
(``POST /shipments/{id}/retry-booking``). While a partner's breaker is open its bookings wait
untouched (one probe at a time); when the partner answers again they all go at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from shared.db.pool import TRANSIENT_DB_ERRORS
from shared.logging import get_logger

from .domain import PartnerBreaker, booking_backoff, booking_given_up
from .known_shipments import known_shipments
from .partners import Address, BookingRequest, CourierPartner, PartnerError

if TYPE_CHECKING:
    from shared.runtime import Runtime

    from .settings import CourierSettings

log = get_logger(__name__)

_CLAIM = """
UPDATE shipments SET booking_claimed_until = now() + make_interval(secs => $3)
WHERE request_id IN (
    SELECT request_id FROM shipments
    -- bookable: status = 'to_book' (migration 0005: the queue's index names it)
    WHERE bookable AND partner = $1 AND next_booking_at <= now()
      AND (booking_claimed_until IS NULL OR booking_claimed_until < now())
    ORDER BY next_booking_at LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING *
"""

# The partner is back: everything that waited for it goes now, not at its backed-off time.
_RELEASE_BACKLOG = """
UPDATE shipments SET next_booking_at = now()
WHERE bookable AND partner = $1 AND next_booking_at > now()
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


class BookingsInFlight:
    """The bookings this process has sent to a partner and not stored (or given up) yet.

    A partner's first callback can overtake our booking's commit: it names a waybill we have not
    stored yet. When the booking is this process's, the callback waits for it (``settle``) instead
    of getting a 404 and coming back after the partner's retry delay. In the benchmark, whose
    partners call back at once, 18% of lifecycles went through that 404, each 200 ms or more
    later. A booking sent by another instance still gets the 404 and the partner's retry.
    """

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[None]] = set()
        self._answered: dict[str, asyncio.Future[None]] = {}  # waybill -> its booking, until stored
        self._news: asyncio.Future[None] | None = None  # resolved when a booking answers or ends

    @contextlib.contextmanager
    def sending(self) -> Iterator[Callable[[str], None]]:
        """Around one booking; call what it yields with the waybill once the partner gave it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.add(done)
        waybills: list[str] = []

        def answered(waybill: str) -> None:
            waybills.append(waybill)
            self._answered[waybill] = done
            self._tell()

        try:
            yield answered
        finally:
            self._pending.discard(done)
            for waybill in waybills:
                self._answered.pop(waybill, None)
            done.set_result(None)
            self._tell()

    def _tell(self) -> None:
        if self._news is not None and not self._news.done():
            self._news.set_result(None)
        self._news = None

    async def settle(self, waybill: str, timeout_s: float) -> bool:
        """Wait, at most ``timeout_s``, until ``waybill``'s booking (if ours) is stored: the
        partner issued it before calling back, so it is one of the bookings in flight now. Only
        that booking once the partner answered it; until then, until every booking in flight
        now has ended. False if none was in flight: nothing to wait for."""
        if not self._pending:
            return False
        before = set(self._pending)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left := deadline - loop.time()) > 0:
            booking = self._answered.get(waybill)
            if booking is not None:
                await asyncio.wait({booking}, timeout=left)
                return True
            if all(b.done() for b in before):
                return True  # stored (read it again), or not ours
            if self._news is None:
                self._news = loop.create_future()
            await asyncio.wait({self._news}, timeout=left)
        return True


def bookings_in_flight(rt: Runtime) -> BookingsInFlight:
    flight: BookingsInFlight = rt.extras.setdefault("bookings_in_flight", BookingsInFlight())
    return flight


def breakers_of(rt: Runtime) -> dict[str, PartnerBreaker]:
    """One breaker per partner, shared by the worker and the ops view."""
    s: CourierSettings = rt.settings  # type: ignore[assignment]
    breakers: dict[str, PartnerBreaker] = rt.extras.setdefault("breakers", {})
    for name in rt.extras["partners"]:
        breakers.setdefault(
            name,
            PartnerBreaker(s.breaker_threshold, s.breaker_probe_start_s, s.breaker_probe_cap_s),
        )
    return breakers


async def booking_worker(rt: Runtime) -> None:
    partners: dict[str, CourierPartner] = rt.extras["partners"]
    breakers = breakers_of(rt)
    await asyncio.gather(
        *(partner_loop(rt, partner, breakers[name]) for name, partner in partners.items())
    )


async def partner_loop(rt: Runtime, partner: CourierPartner, breaker: PartnerBreaker) -> None:
    """Keep up to ``BOOKING_CONCURRENCY`` bookings with ``partner`` in flight (fewer while its
    breaker is not closed), each on its own: a slow answer holds up its own booking only.

    Claims when woken (a consumed batch made rows bookable), when the last claim may have left
    due rows behind and enough slots are free, and every second (rows whose backoff ran out).
    Until 2026-11-22 it claimed a batch and waited for all of it before claiming again: the
    slowest booking of a batch (up to the partner timeout) held up every booking due meanwhile,
    and under load courier fell behind there first.
    """
    s: CourierSettings = rt.settings  # type: ignore[assignment]
    wake = rt.waker(f"booking:{partner.name}")
    enough = max(1, s.booking_concurrency // 2)
    inflight: set[asyncio.Task[None]] = set()
    freed = asyncio.Event()  # a booking ended: a slot is free
    more = True  # due rows may be waiting that the last claim did not take

    async def attempt(row: asyncpg.Record, probe: bool) -> None:
        try:
            result = await book_one(rt, partner, row)
            if await _update_breaker(rt, partner.name, breaker, [result], probe):
                wake.set()  # the backlog was released: claim it at once
        except Exception:
            log.exception("booking worker error", partner=partner.name,
                          request_id=str(row["request_id"]))

    def ended(task: asyncio.Task[None]) -> None:
        inflight.discard(task)
        freed.set()

    try:
        while True:
            if wake.is_set():
                wake.clear()
                more = True
            freed.clear()  # before counting: a booking that ends from here on wakes the wait
            now = time.monotonic()
            free = breaker.capacity(now, s.booking_concurrency) - len(inflight)
            if free > 0 and more and (free >= enough or not inflight):
                probe = breaker.state(now) == "half_open"
                try:
                    rows = await rt.pool.fetch(_CLAIM, partner.name, free, s.booking_claim_s)
                except TRANSIENT_DB_ERRORS as exc:
                    # a claim expires and its booking is retried; the partner dedupes on order_ref
                    log.warning("booking worker cannot reach the database", error=repr(exc))
                    await asyncio.sleep(1.0)
                    continue
                except Exception:
                    log.exception("booking worker error", partner=partner.name)
                    await asyncio.sleep(1.0)
                    continue
                # all due rows taken: the next ones are announced by the waker (set by a
                # consumed batch) or found by the poll, not by claiming again at once
                more = len(rows) == free
                for row in rows:
                    task = asyncio.create_task(attempt(row, probe))
                    inflight.add(task)
                    task.add_done_callback(ended)
                if more:
                    continue
            if breaker.capacity(now, s.booking_concurrency) == 0:
                timeout = max(0.05, breaker.seconds_to_probe(now))
            else:
                timeout = 1.0
            if not await _first(wake, freed if more else None, timeout):
                more = True  # the poll: backoffs run out, probes come due
    finally:
        for task in list(inflight):
            task.cancel()  # a claim expires and its booking is retried (the partner dedupes)
        await asyncio.gather(*inflight, return_exceptions=True)


async def _first(wake: asyncio.Event, freed: asyncio.Event | None, timeout: float) -> bool:
    """Wait for the waker, a freed slot (if given) or ``timeout``; False on the timeout."""
    waits = [asyncio.ensure_future(e.wait()) for e in (wake, freed) if e is not None]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return bool(done)


@dataclass(frozen=True)
class Attempt:
    partner_answered: bool  # booked or refused: the partner is up
    error: str | None = None


async def _update_breaker(
    rt: Runtime, name: str, breaker: PartnerBreaker, results: list[Attempt], probe: bool
) -> bool:
    """Record the attempts; True if the partner is back and its waiting bookings were released."""
    recovered = False
    for result in results:
        if result.partner_answered:
            recovered = breaker.record_success() or recovered
        else:
            was = breaker.state(time.monotonic())
            breaker.record_failure(time.monotonic(), result.error or "", probe)
            if was == "closed" and breaker.state(time.monotonic()) != "closed":
                log.error("partner unavailable, bookings paused", partner=name,
                          failures=breaker.failures, reason=breaker.last_error)
    if recovered:
        released = await rt.pool.execute(_RELEASE_BACKLOG, name)
        log.info("partner available again, backlog released", partner=name, released=released)
    return recovered


async def book_one(rt: Runtime, partner: CourierPartner, row: asyncpg.Record) -> Attempt:
    with bookings_in_flight(rt).sending() as answered:
        return await _book_one(rt, partner, row, answered)


async def _book_one(
    rt: Runtime, partner: CourierPartner, row: asyncpg.Record, answered: Callable[[str], None]
) -> Attempt:
    s: CourierSettings = rt.settings  # type: ignore[assignment]
    request_id = row["request_id"]
    attempts = row["booking_attempts"] + 1
    try:
        booking = await partner.book(booking_request(row))
    except PartnerError as exc:
        now = datetime.now(UTC)
        since = row["to_book_since"] or row["updated_at"]
        give_up = timedelta(hours=s.booking_give_up_after_h)
        if exc.transient and not booking_given_up(since, now, give_up):
            delay = booking_backoff(attempts, s.booking_retry_start_s, s.booking_retry_cap_s)
            await rt.pool.execute(
                "UPDATE shipments SET booking_attempts = $2, booking_error = $3,"
                " next_booking_at = now() + make_interval(secs => $4),"
                " booking_claimed_until = NULL, updated_at = now() WHERE request_id = $1",
                request_id,
                attempts,
                exc.reason,
                delay,
            )
            log.warning("booking failed, will retry", request_id=str(request_id),
                        partner=partner.name, attempts=attempts, retry_in_s=delay,
                        reason=exc.reason)
            return Attempt(False, exc.reason)
        reason = exc.reason if not exc.transient else (
            f"gave up after {s.booking_give_up_after_h:g} h of retries; last error: {exc.reason}"
        )
        await rt.pool.execute(
            "UPDATE shipments SET status = 'booking_failed', booking_attempts = $2,"
            " booking_error = $3, booking_claimed_until = NULL, updated_at = now()"
            " WHERE request_id = $1",
            request_id,
            attempts,
            reason,
        )
        log.error("booking failed, waiting for ops", request_id=str(request_id),
                  partner=partner.name, reason=reason)
        return Attempt(not exc.transient, exc.reason)
    answered(booking.waybill)  # a callback naming it waits for the store below (webhooks)
    stored = await rt.pool.fetchval(
        "UPDATE shipments SET status = 'booked', waybill = $2, booked_at = now(),"
        " booking_attempts = $3, booking_error = NULL,"
        " booking_claimed_until = NULL, updated_at = now()"
        " WHERE request_id = $1 AND status = 'to_book' RETURNING true",
        request_id,
        booking.waybill,
        attempts,
    )
    if not stored:
        # cancelled by ops while the booking was on its way: take it back at the partner too
        log.warning("booked a shipment cancelled meanwhile; cancelling at the partner",
                    request_id=str(request_id), partner=partner.name, waybill=booking.waybill)
        with contextlib.suppress(PartnerError):
            await partner.cancel(booking.waybill)
        return Attempt(True)
    # its partner's callbacks decide on this, not on a read (webhooks.py, known_shipments.py)
    known_shipments(rt).remember_booked(partner.name, booking.waybill, row)
    log.info("shipment booked", request_id=str(request_id), correlation_id=row["correlation_id"],
             partner=partner.name, waybill=booking.waybill, attempts=attempts)
    return Attempt(True)
