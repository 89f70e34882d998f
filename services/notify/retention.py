"""Retention (UU PDP No. 27/2022: personal data is deleted when its purpose ends).

Notify's purpose for a request ends when the request is finished (a ``delivered``,
``returned-to-office`` or ``request-rejected`` was noted: intake's rule too), every message of it
is final (``sent`` or ``failed``: nothing ``pending``, ``sending`` or ``unconfirmed``) and the
newest of them (noted, retried, sent or given a WhatsApp status) is older than
``PERSONAL_DATA_RETENTION_DAYS`` (90). A request that never finishes keeps its recipient, so a
late event is still told to the applicant. Then, in one statement per batch of requests:

* ``recipients``: ``phone``, ``name``, ``delivery_name``, ``delivery_phone`` are erased (NULL);
  kept: tracking code, document type, partner, fee, requirement documents (their kinds), the
  registration time;
* its ``notifications``: ``body`` (the text sent: name, tracking code, who received it, reasons),
  ``event_data`` (nothing reads it once sent: ``received_by``, free-text reasons, document
  number, operator), ``source`` (the consumed event, NIK and address included for
  ``request-registered``; a sent row has none already), ``error`` and ``wa_error`` (free text that
  may quote what was sent) are erased (NULL); kept: event type and time, recipient role, status,
  kind, template name, attempts, wamid, WhatsApp status and times.

Both are marked ``personal_data_erased_at`` and never selected again. An erased message is never
sent again: the ops retry and a replayed dead letter leave it failed, a late "free text outside
the window" callback does not re-arm it, and the sender never claims a message whose recipient
is erased. A message noted after its request was erased (an event after 90 days without any) has
no one to go to: a day later it is marked ``failed`` and erased (``late_notifications_erased``).

Also: ``conversations`` (a phone number and when it last wrote to us) only serve WhatsApp's
24-hour window: deleted two days after the applicant's last message (a row that old and no row
both mean "template"). ``whatsapp_statuses`` (callbacks as received: wamid, status, Meta's error
texts) are deleted after the retention period; their outcome stays on the notification. Old dead
letters (raw events, NIK included) too. The runner is every service's: ``shared/retention.py``.
"""

from __future__ import annotations

from datetime import timedelta

from shared import retention
from shared.contracts import topics
from shared.retention import DEAD_LETTERS, Erasure
from shared.runtime import Runtime

from .domain import SERVICE_WINDOW

# the events after which a request is finished (intake's TERMINAL statuses)
_FINISHED = f"('{topics.DELIVERED}', '{topics.RETURNED_TO_OFFICE}', '{topics.REQUEST_REJECTED}')"

REQUESTS = Erasure(
    "requests_erased",
    f"""
    WITH done AS (
        SELECT r.request_id FROM recipients r
        WHERE r.personal_data_erased_at IS NULL AND r.registered_at < $1
          AND EXISTS (SELECT 1 FROM notifications f WHERE f.request_id = r.request_id
                      AND f.event_type IN {_FINISHED})
          AND NOT EXISTS (
              SELECT 1 FROM notifications n
              WHERE n.request_id = r.request_id
                AND (n.unsent
                     OR GREATEST(n.created_at, n.next_attempt_at, n.sent_at, n.wa_status_at) >= $1))
        ORDER BY r.registered_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED
    ), notes AS (
        UPDATE notifications n SET body = NULL, event_data = NULL, source = NULL, error = NULL,
            wa_error = NULL, personal_data_erased_at = now()
        FROM done WHERE n.request_id = done.request_id AND n.personal_data_erased_at IS NULL
    )
    UPDATE recipients r SET phone = NULL, name = NULL, delivery_name = NULL,
        delivery_phone = NULL, personal_data_erased_at = now()
    FROM done WHERE r.request_id = done.request_id
    """,
)

# Noted after the request was erased: the sender never claims them (no recipient). A day later
# no claim from before the erasure can still be on the wire.
LATE_NOTIFICATIONS = Erasure(
    "late_notifications_erased",
    """
    UPDATE notifications SET status = 'failed',
        error = 'not sent: the recipient''s personal data had been erased (retention)',
        body = NULL, event_data = NULL, source = NULL, wa_error = NULL, claim_token = NULL,
        claimed_until = NULL, personal_data_erased_at = now()
    WHERE id IN (
        SELECT n.id FROM notifications n
        WHERE n.unsent AND n.created_at < $1
          AND EXISTS (SELECT 1 FROM recipients r WHERE r.request_id = n.request_id
                      AND r.personal_data_erased_at IS NOT NULL)
        ORDER BY n.id LIMIT $2 FOR UPDATE OF n SKIP LOCKED)
    """,
    after=timedelta(days=1),
)

CONVERSATIONS = Erasure(
    "conversations_deleted",
    "DELETE FROM conversations WHERE wa_id IN (SELECT wa_id FROM conversations"
    " WHERE last_inbound_at < $1 ORDER BY last_inbound_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    after=2 * SERVICE_WINDOW,
)

WHATSAPP_STATUSES = Erasure(
    "whatsapp_statuses_deleted",
    "DELETE FROM whatsapp_statuses WHERE (wamid, status) IN (SELECT wamid, status"
    " FROM whatsapp_statuses WHERE received_at < $1 ORDER BY received_at LIMIT $2"
    " FOR UPDATE SKIP LOCKED)",
)

ERASURES = [REQUESTS, LATE_NOTIFICATIONS, CONVERSATIONS, WHATSAPP_STATUSES, DEAD_LETTERS]


async def retention_loop(rt: Runtime) -> None:
    await retention.retention_loop(rt, ERASURES)
