"""Courier partner adapters (Pos Indonesia, J&T Express) behind one interface, CourierPartner."""

from __future__ import annotations

import httpx

from services.courier.partners.base import (
    Address,
    Booking,
    BookingRequest,
    CourierPartner,
    EventKind,
    PartnerError,
    PartnerEvent,
    Sender,
    SettlementFormat,
    WebhookRejected,
)
from services.courier.partners.jnt import JNT, JNT_ACK, JntPartner, jnt_refusal
from services.courier.partners.pos import POS, PosPartner

__all__ = [
    "JNT",
    "JNT_ACK",
    "POS",
    "Address",
    "Booking",
    "BookingRequest",
    "CourierPartner",
    "EventKind",
    "JntPartner",
    "PartnerError",
    "PartnerEvent",
    "PosPartner",
    "Sender",
    "SettlementFormat",
    "WebhookRejected",
    "build_partners",
    "jnt_refusal",
]


def build_partners(
    http: httpx.AsyncClient,
    *,
    jnt_base_url: str,
    jnt_api_account: str,
    jnt_private_key: str,
    pos_base_url: str,
    pos_client_id: str,
    pos_client_secret: str,
    pos_webhook_secret: str,
    timeout_s: float = 10.0,
    jnt_customer_code: str | None = None,
    sender: Sender | None = None,
) -> dict[str, CourierPartner]:
    """Both adapters, keyed by the partner names used in events (``jnt``, ``pos``)."""
    return {
        JNT: JntPartner(
            http,
            jnt_base_url,
            jnt_api_account,
            jnt_private_key,
            timeout_s,
            customer_code=jnt_customer_code,
            sender=sender,
        ),
        POS: PosPartner(
            http,
            pos_base_url,
            pos_client_id,
            pos_client_secret,
            pos_webhook_secret,
            timeout_s,
            sender=sender,
        ),
    }
