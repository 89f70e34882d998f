"""Tracking callbacks as each partner would send them: wire format and signature (pure).

A request is rebuilt for every delivery attempt, because its timestamp header must be fresh; the
event id stays the same across attempts, as a real partner's does, so the receiver can dedupe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from sandbox.settings import SandboxSettings
from sandbox.state import CallbackRecord, Shipment, rfc3339
from shared.webhook_signing import jnt_digest, sign_standard

# J&T writes times as Jakarta local time (WIB, UTC+7) without an offset.
WIB = timezone(timedelta(hours=7), "WIB")

_POS_EVENTS: dict[str, str] = {
    "picked_up": "pickup",
    "in_transit": "in_transit",
    "cod_collected": "cod_collected",
    "delivered": "delivered",
    "delivery_failed": "failed",
    "returned": "returned",
}

# Old enough to fall outside any 5-minute window.
STALE_BY_S = 600

_JNT_SCANS: dict[str, tuple[str, str, str]] = {
    # kind -> (scanTypeCode, scanType, desc)
    "picked_up": ("10", "Pick Up", "Paket telah diambil oleh kurir J&T"),
    "in_transit": ("20", "Departure", "Paket dikirim ke hub tujuan"),
    "delivered": ("100", "Delivered", "Paket telah diterima"),
    "delivery_failed": ("110", "Problem", "Pengiriman bermasalah"),
    "returned": ("173", "Returned", "Paket telah dikembalikan ke pengirim"),
}


def format_jnt_time(moment: datetime) -> str:
    return moment.astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class CallbackFact:
    """What happened to a shipment, before it is put in a partner's words."""

    record: CallbackRecord
    received_by: str | None = None
    documents_collected: bool | None = None
    reason: str | None = None


@dataclass(frozen=True)
class SignedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


def jnt_biz_content(shipment: Shipment, fact: CallbackFact) -> dict[str, Any]:
    rec = fact.record
    if rec.kind == "cod_collected":
        return {
            "billCode": shipment.waybill,
            "codDetails": [
                {
                    "codId": rec.event_id,
                    "codValue": str(rec.cod_amount),
                    "payTime": format_jnt_time(rec.occurred_at),
                }
            ],
        }
    code, scan_type, desc = _JNT_SCANS[rec.kind]
    detail: dict[str, Any] = {
        "scanId": rec.event_id,
        "scanTime": format_jnt_time(rec.occurred_at),
        "scanTypeCode": code,
        "scanType": scan_type,
        "desc": desc,
    }
    if rec.kind == "delivered":
        detail |= {
            "signer": fact.received_by,
            "sigPicUrl": f"https://sandbox.invalid/jnt/sig/{shipment.waybill}.jpg",
            "docsCollected": fact.documents_collected,
        }
    if fact.reason:
        detail["problemReason"] = fact.reason
    return {"billCode": shipment.waybill, "details": [detail]}


def jnt_request(
    settings: SandboxSettings,
    shipment: Shipment,
    fact: CallbackFact,
    now: float,
    bad_signature: bool = False,
    stale: bool = False,
) -> SignedRequest:
    biz = json.dumps(jnt_biz_content(shipment, fact), ensure_ascii=False, separators=(",", ":"))
    key = settings.jnt_private_key + ("-wrong" if bad_signature else "")
    sent_at = now - STALE_BY_S if stale else now
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "apiAccount": settings.jnt_api_account,
        "digest": jnt_digest(biz, key),
        "timestamp": str(int(sent_at * 1000)),
    }
    return SignedRequest("/webhooks/jnt", headers, urlencode({"bizContent": biz}).encode())


def pos_payload(shipment: Shipment, fact: CallbackFact) -> dict[str, Any]:
    rec = fact.record
    return {
        "id": rec.event_id,
        "awb": shipment.waybill,
        "event": _POS_EVENTS[rec.kind],
        "occurred_at": rfc3339(rec.occurred_at),
        "cod_amount": rec.cod_amount,
        "received_by": fact.received_by,
        "documents_collected": fact.documents_collected,
        "reason": fact.reason,
    }


def pos_request(
    settings: SandboxSettings,
    shipment: Shipment,
    fact: CallbackFact,
    now: float,
    bad_signature: bool = False,
    stale: bool = False,
) -> SignedRequest:
    body = json.dumps(pos_payload(shipment, fact), separators=(",", ":")).encode()
    secret = settings.pos_webhook_secret + ("-wrong" if bad_signature else "")
    timestamp = int(now - STALE_BY_S if stale else now)
    headers = {
        "content-type": "application/json",
        "webhook-id": fact.record.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secret, fact.record.event_id, timestamp, body),
    }
    return SignedRequest("/webhooks/pos", headers, body)


def signed_request(
    settings: SandboxSettings,
    shipment: Shipment,
    fact: CallbackFact,
    now: float,
    bad_signature: bool = False,
    stale: bool = False,
) -> SignedRequest:
    build = jnt_request if shipment.partner == "jnt" else pos_request
    return build(settings, shipment, fact, now, bad_signature, stale)


def occurred(moment: datetime) -> datetime:
    """J&T reports scan times to the second; keep every partner's facts at that precision."""
    return moment.replace(microsecond=0)
