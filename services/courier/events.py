"""Courier learns where to deliver from request-registered and when to book from document-printed.

The two arrive on different topics in any order; the shipment becomes ``to_book`` when both are in.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from shared.contracts import topics
from shared.contracts.events import DocumentPrinted, Envelope, RequestRegistered
from shared.kafka.consumer import Handler


async def note_registration(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    data: RequestRegistered = event.data
    await conn.execute(
        """
        INSERT INTO shipments (request_id, correlation_id, registered, partner, document_type,
            recipient_name, recipient_phone, address, cod_fee, requirement_documents, status)
        VALUES ($1, $2, true, $3, $4, $5, $6, $7::jsonb, $8, $9::jsonb, 'awaiting_print')
        ON CONFLICT (request_id) DO UPDATE SET
            registered = true, partner = $3, document_type = $4, recipient_name = $5,
            recipient_phone = $6, address = $7::jsonb, cod_fee = $8, requirement_documents = $9,
            status = CASE WHEN shipments.status = 'awaiting_registration' THEN 'to_book'
                          ELSE shipments.status END,
            to_book_since = CASE WHEN shipments.status = 'awaiting_registration' THEN now()
                                 ELSE shipments.to_book_since END,
            next_booking_at = now(), updated_at = now()
        WHERE NOT shipments.registered
        """,
        event.request_id,
        event.correlation_id,
        data.delivery.partner,
        data.document_type.value,
        data.delivery.recipient_name,
        data.delivery.recipient_phone,
        data.delivery.address.model_dump_json(),
        data.cod_fee,
        json.dumps(data.requirement_documents),
    )


async def note_printed(conn: asyncpg.Connection, event: Envelope[Any]) -> None:
    data: DocumentPrinted = event.data
    await conn.execute(
        """
        INSERT INTO shipments (request_id, correlation_id, printed_at, document_number, status)
        VALUES ($1, $2, $3, $4, 'awaiting_registration')
        ON CONFLICT (request_id) DO UPDATE SET
            printed_at = $3, document_number = $4,
            status = CASE WHEN shipments.status = 'awaiting_print' THEN 'to_book'
                          ELSE shipments.status END,
            to_book_since = CASE WHEN shipments.status = 'awaiting_print' THEN now()
                                 ELSE shipments.to_book_since END,
            next_booking_at = now(), updated_at = now()
        WHERE shipments.printed_at IS NULL
        """,
        event.request_id,
        event.correlation_id,
        data.printed_at,
        data.document_number,
    )


def handlers() -> dict[str, Handler]:
    return {topics.REQUEST_REGISTERED: note_registration, topics.DOCUMENT_PRINTED: note_printed}
