"""Kafka topic names: one topic per event type (DESIGN.md section 2)."""

from __future__ import annotations

REQUEST_REGISTERED = "request-registered"
DOCUMENT_PRINTED = "document-printed"
HANDED_TO_COURIER = "handed-to-courier"
COD_PAID = "cod-paid"
DELIVERED = "delivered"
REQUEST_REJECTED = "request-rejected"
DELIVERY_FAILED = "delivery-failed"
RETURNED_TO_OFFICE = "returned-to-office"

LIFECYCLE_TOPICS: tuple[str, ...] = (
    REQUEST_REGISTERED,
    DOCUMENT_PRINTED,
    HANDED_TO_COURIER,
    COD_PAID,
    DELIVERED,
)
FAILURE_TOPICS: tuple[str, ...] = (REQUEST_REJECTED, DELIVERY_FAILED, RETURNED_TO_OFFICE)
EVENT_TOPICS: tuple[str, ...] = LIFECYCLE_TOPICS + FAILURE_TOPICS

SERVICES: tuple[str, ...] = ("intake", "printing", "courier", "notify")


def dead_letter_topic(service: str) -> str:
    """Each consuming service has its own dead-letter topic, e.g. ``dlq.printing``."""
    return f"dlq.{service}"


ALL_TOPICS: tuple[str, ...] = EVENT_TOPICS + tuple(dead_letter_topic(s) for s in SERVICES)
