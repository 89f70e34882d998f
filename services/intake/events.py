"""Intake keeps each request's status from every lifecycle event (its status view).

A consumed batch is applied with three statements whatever its size (``apply_batch``): lock the
batch's requests, update the statuses that moved, add the timeline rows. The per-topic handlers
(the consumer's fallback, one event per savepoint) call the same function with one event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from shared.contracts import topics
from shared.contracts.events import Envelope
from shared.kafka.consumer import Handler, RejectEvent
from shared.logging import get_logger

from . import repository
from .domain import apply_event

log = get_logger(__name__)

# What of each event the timeline may show: never personal data.
_PUBLIC_FIELDS = {
    topics.DOCUMENT_PRINTED: frozenset({"printed_at"}),
    topics.HANDED_TO_COURIER: frozenset({"partner", "waybill", "cod_amount"}),
    topics.COD_PAID: frozenset({"partner", "waybill", "amount"}),
    topics.DELIVERED: frozenset({"partner", "waybill", "documents_collected"}),
    topics.REQUEST_REJECTED: frozenset({"reason"}),
    topics.DELIVERY_FAILED: frozenset({"partner", "waybill", "reason", "attempt"}),
    topics.RETURNED_TO_OFFICE: frozenset({"partner", "waybill", "reason"}),
}


def _public_detail(event: Envelope[Any]) -> dict[str, Any]:
    fields = _PUBLIC_FIELDS.get(event.event_type)
    return event.data.model_dump(mode="json", include=fields) if fields else {}


async def apply_batch(conn: asyncpg.Connection, events: Sequence[Envelope[Any]]) -> None:
    """Apply ``events`` in list order, as one by one would; raises ``RejectEvent`` if one is about
    an unknown request (the consumer then applies them singly and dead-letters that one)."""
    # One statement locks every request of the batch, in request_id order: another consumer
    # instance or an HTTP handler locking several of them cannot deadlock against this one.
    status = await repository.lock_statuses(conn, {e.request_id for e in events})
    touched: set[uuid.UUID] = set()  # what one by one would have UPDATEd
    cod_paid: set[uuid.UUID] = set()
    timeline: list[repository.TimelineRow] = []
    for event in events:
        current = status.get(event.request_id)
        if current is None:
            raise RejectEvent(f"unknown request {event.request_id}")
        # Several events of one request chain through its status, in consumed order.
        change = apply_event(current, event.event_type)
        if change.note:
            with structlog.contextvars.bound_contextvars(
                request_id=str(event.request_id),
                correlation_id=event.correlation_id,
                event_id=str(event.event_id),
                event_type=event.event_type,
            ):
                log.warning(
                    "event does not fit the request's status", status=current, note=change.note
                )
        status[event.request_id] = change.status
        if change.changed:
            touched.add(event.request_id)
        if event.event_type == topics.COD_PAID:
            touched.add(event.request_id)
            cod_paid.add(event.request_id)
        timeline.append(
            repository.TimelineRow(
                request_id=event.request_id,
                event_id=event.event_id,
                event_type=event.event_type,
                occurred_at=event.occurred_at,
                detail=json.dumps(_public_detail(event)),
                note=change.note,
            )
        )
    # Statuses only move forward (domain.apply_event), so writing each request's final status
    # once ends where one UPDATE per event would; updated_at/finished_at use now(), the same for
    # the whole transaction either way.
    if touched:
        await repository.update_statuses(
            conn, [(rid, status[rid], True if rid in cod_paid else None) for rid in sorted(touched)]
        )
    await repository.add_timeline_rows(conn, timeline)


async def record_event(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    """One event: the consumer's per-event fallback (and tests) use the batch path with one."""
    await apply_batch(conn, [event])


def handlers() -> dict[str, Handler]:
    # Not request-registered: intake writes that event itself, with the request's row and its
    # timeline entry, in the registering transaction; consuming it back changed nothing.
    return {
        topic: record_event for topic in topics.EVENT_TOPICS if topic != topics.REQUEST_REGISTERED
    }
