"""Retention (UU PDP No. 27/2022: personal data is deleted when its purpose ends).

A shipment's purpose ends when it is over (``delivered``, ``completed``, ``returned_to_office``
or ``cancelled``) AND no originals are owed any more (``originals_status`` ``none`` or
``received``). ``PERSONAL_DATA_RETENTION_DAYS`` (90) after its last change (``updated_at``: the
delivery, return, cancellation, a late callback or the office's receipt of the originals, whichever
came last), the erasure blanks (NULL) on ``shipments``:

- ``recipient_name``, ``recipient_phone``, ``address`` (the whole jsonb): the recipient;
- ``received_by``: whoever signed at the door (a name, from the partner);
- ``last_failure_reason``, ``return_reason`` (the partner's courier's free text: "rumah Bu Sri
  kosong"), ``cancel_reason`` (ops' free text) and ``booking_error`` (a partner's message, which
  may echo the phone or address it refused);

and ``originals_custody.detail`` of the erased shipments ("diterima oleh <name>", the office's
note), in a second erasure that also catches a step written after the shipment was erased.

Kept (not personal, or staff, needed for COD, service levels and the custody audit): status and
every time, partner, waybill, document type, COD fee and amount collected, attempts, flags,
``document_number`` (as printing keeps it), ``requirement_documents`` / ``originals_missing``
(document types), ``originals_received_by`` and custody ``actor`` (office staff, the partner by
waybill), ``partner_callbacks`` (ids, kinds, amounts: no payload is stored),
``shipment_anomalies.detail`` (written by the state machine: kinds and amounts only),
``settlement_imports`` / ``settlement_lines`` (waybills and amounts). Old dead letters (raw events,
NIK included) are deleted. Never erased: a shipment still open (``booking_failed``,
``delivery_failed``...), or whose originals are still owed or need a person (``with_courier``,
``unconfirmed``, ``not_collected``, ``received_incomplete``).

An erased row is never picked again (``erasable_since``, a generated column, is NULL once
``personal_data_erased_at`` is set: migration 0005); late writes cannot
refill it (``webhooks._STORE``, ``events._NOTE_REGISTRATIONS``). The runner is every service's:
``shared/retention.py``.
"""

from __future__ import annotations

from shared import retention
from shared.retention import DEAD_LETTERS, Erasure
from shared.runtime import Runtime

SHIPMENTS = Erasure(
    "shipments_erased",
    """
    UPDATE shipments SET recipient_name = NULL, recipient_phone = NULL, address = NULL,
        received_by = NULL, last_failure_reason = NULL, return_reason = NULL,
        cancel_reason = NULL, booking_error = NULL, personal_data_erased_at = now()
    WHERE request_id IN (
        SELECT request_id FROM shipments
        -- erasable_since (migration 0005): updated_at of a shipment that is over (delivered,
        -- completed, returned to the office or cancelled) with no originals owed (none, or all
        -- received) and not erased yet; NULL otherwise
        WHERE erasable_since < $1
        ORDER BY erasable_since LIMIT $2 FOR UPDATE SKIP LOCKED)
    """,
)

CUSTODY = Erasure(
    "custody_details_erased",
    """
    UPDATE originals_custody SET detail = NULL
    WHERE id IN (
        SELECT c.id FROM originals_custody c JOIN shipments s ON s.request_id = c.request_id
        WHERE c.detail IS NOT NULL AND s.personal_data_erased_at IS NOT NULL
          AND s.updated_at < $1
        ORDER BY c.id LIMIT $2 FOR UPDATE OF c SKIP LOCKED)
    """,
)

ERASURES = [SHIPMENTS, CUSTODY, DEAD_LETTERS]


async def retention_loop(rt: Runtime) -> None:
    await retention.retention_loop(rt, ERASURES)
