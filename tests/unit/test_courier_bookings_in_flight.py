"""A callback that overtook its booking waits for that booking only (booking.BookingsInFlight)."""

from __future__ import annotations

import asyncio

from services.courier.booking import BookingsInFlight


async def test_nothing_in_flight_nothing_to_wait_for() -> None:
    assert await BookingsInFlight().settle("JW1", 2.0) is False


async def test_waits_for_the_booking_that_answered_with_the_waybill_not_for_the_others() -> None:
    flight = BookingsInFlight()
    slow_other = asyncio.Event()
    store_ours = asyncio.Event()

    async def booking(waybill: str, answered_at: asyncio.Event | None, ends: asyncio.Event) -> None:
        with flight.sending() as answered:
            if answered_at is not None:
                await answered_at.wait()
            answered(waybill)
            await ends.wait()  # storing it

    partner_answers = asyncio.Event()
    ours = asyncio.create_task(booking("JW1", partner_answers, store_ours))
    other = asyncio.create_task(booking("JW2", None, slow_other))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(flight.settle("JW1", 5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # our booking is not answered yet: nothing known of it
    partner_answers.set()
    await asyncio.sleep(0.05)
    assert not waiting.done()  # answered, not stored yet
    store_ours.set()
    assert await asyncio.wait_for(waiting, 1.0) is True  # stored: read it again
    assert not other.done()  # the other, slower booking was not waited for
    slow_other.set()
    await asyncio.gather(ours, other)


async def test_a_waybill_not_ours_waits_only_for_the_bookings_in_flight_when_it_came() -> None:
    flight = BookingsInFlight()
    first_ends, later_ends = asyncio.Event(), asyncio.Event()

    async def booking(waybill: str, ends: asyncio.Event) -> None:
        with flight.sending() as answered:
            answered(waybill)
            await ends.wait()

    first = asyncio.create_task(booking("JW1", first_ends))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(flight.settle("ELSEWHERE", 5.0))
    await asyncio.sleep(0)
    later = asyncio.create_task(booking("JW3", later_ends))  # started after the callback came
    await asyncio.sleep(0.05)
    assert not waiting.done()
    first_ends.set()
    assert await asyncio.wait_for(waiting, 1.0) is True  # not the later booking's end
    later_ends.set()
    await asyncio.gather(first, later)


async def test_the_wait_is_bounded() -> None:
    flight = BookingsInFlight()
    never = asyncio.Event()

    async def booking() -> None:
        with flight.sending():
            await never.wait()

    task = asyncio.create_task(booking())
    await asyncio.sleep(0)
    assert await asyncio.wait_for(flight.settle("JW9", 0.2), 1.0) is True
    never.set()
    await task
