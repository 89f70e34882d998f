"""Intake keeps each request's status from every lifecycle event (its status view)."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.contracts import topics
from shared.contracts.events import Envelope
from shared.kafka.consumer import Handler, RejectEvent
from shared.logging import get_logger

from . import repository
from .domain import apply_event

log = get_logger(__name__)

# What of each event the timeline may show: never personal data.
_PUBLIC_FIELDS = {
    topics.DOCUMENT_PRINTED: ("printed_at",),
    topics.HANDED_TO_COURIER: ("partner", "waybill", "cod_amount"),
    topics.COD_PAID: ("partner", "waybill", "amount"),
    topics.DELIVERED: ("partner", "waybill", "documents_collected"),
    topics.REQUEST_REJECTED: ("reason",),
    topics.DELIVERY_FAILED: ("partner", "waybill", "reason", "attempt"),
    topics.RETURNED_TO_OFFICE: ("partner", "waybill", "reason"),
}


async def record_event(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    current = await repository.lock_status(conn, event.request_id)
    if current is None:
        raise RejectEvent(f"unknown request {event.request_id}")
    change = apply_event(current, event.event_type)
    if change.note:
        log.warning("event does not fit the request's status", status=current, note=change.note)
    cod_paid = True if event.event_type == topics.COD_PAID else None
    if change.changed or cod_paid:
        await repository.update_status(conn, event.request_id, change.status, cod_paid)
    data = event.data.model_dump(mode="json")
    await repository.add_timeline(
        conn,
        request_id=event.request_id,
        event_id=event.event_id,
        event_type=event.event_type,
        occurred_at=event.occurred_at,
        detail={k: data[k] for k in _PUBLIC_FIELDS.get(event.event_type, ()) if k in data},
        note=change.note,
    )


def handlers() -> dict[str, Handler]:
    # Not request-registered: intake writes that event itself, with the request's row and its
    # timeline entry, in the registering transaction; consuming it back changed nothing.
    return {
        topic: record_event for topic in topics.EVENT_TOPICS if topic != topics.REQUEST_REGISTERED
    }
