"""Notify's rules, pure: who is told what, free text or template, retries, WhatsApp's statuses."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Literal

from shared.contracts import topics

Recipient = Literal["applicant", "delivery"]
Kind = Literal["template", "text"]

# Facts the person at the door must know when it is not the applicant: the courier is coming
# (have Rp 20.000 and the original documents ready), or could not deliver and will come again.
DOOR_EVENTS: frozenset[str] = frozenset({topics.HANDED_TO_COURIER, topics.DELIVERY_FAILED})

# WhatsApp's customer-service window: free text only within 24 hours of the applicant's last
# message. The margin keeps a message that is slow to go out from landing just after it closes.
SERVICE_WINDOW = timedelta(hours=24)

# Meta's "re-engagement message" failure: free text sent outside the window (status callback).
RE_ENGAGEMENT_ERROR = 131047

# A status callback never moves a message backwards. 'failed' outranks only 'sent': a message that
# was delivered or read reached the phone whatever a stray failure says.
_WA_STATUS_RANK = {"sent": 1, "failed": 2, "delivered": 3, "read": 4}


def recipients_for(event_type: str, separate_delivery_contact: bool) -> tuple[Recipient, ...]:
    if separate_delivery_contact and event_type in DOOR_EVENTS:
        return ("applicant", "delivery")
    return ("applicant",)


def message_kind(
    last_inbound_at: datetime | None, now: datetime, margin: timedelta, force_template: bool
) -> Kind:
    """Free text inside the 24-hour window, an approved template outside it."""
    if force_template or last_inbound_at is None:
        return "template"
    return "text" if now < last_inbound_at + SERVICE_WINDOW - margin else "template"


def retry_delay(attempts: int, start_s: float, cap_s: float) -> float:
    """Backoff after the ``attempts``-th failed send: doubling from ``start_s`` up to ``cap_s``."""
    return float(min(cap_s, start_s * 2 ** max(attempts - 1, 0)))


def advance_wa_status(current: str | None, reported: str) -> str:
    """The message's status after a callback reporting ``reported``, in whatever order they come."""
    if current is None or _WA_STATUS_RANK.get(reported, 0) > _WA_STATUS_RANK.get(current, 0):
        return reported
    return current


def callback_ref(event_id: uuid.UUID, recipient: str) -> str:
    """What travels as ``biz_opaque_callback_data``: the notification's identity, not a row id."""
    return f"{event_id}/{recipient}"


def parse_callback_ref(value: str | None) -> tuple[uuid.UUID, str] | None:
    if not value:
        return None
    event_id, _, recipient = value.partition("/")
    if recipient not in ("applicant", "delivery"):
        return None
    try:
        return uuid.UUID(event_id), recipient
    except ValueError:
        return None
