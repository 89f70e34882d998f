"""J&T Express adapter, on the wire format of the public J&T Open Platform.

Requests: POST form ``bizContent=<json>`` with headers ``apiAccount``, ``digest`` =
base64(md5(bizContent + private key)) and ``timestamp`` (ms). J&T answers HTTP 200 with
``{"code": "1", ...}`` on success and another code on refusal.

Tracking callbacks arrive the same way (form ``bizContent``, headers ``digest`` and ``timestamp``).
J&T's digest does not cover the timestamp, so the 5-minute window only stops naive replays; the real
replay guard is the dedupe on ``partner_event_id`` in the courier service's inbox.
The COD money is reported in a separate callback with ``codDetails`` (our documented choice).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

import httpx

from services.courier.partners._http import json_body, send, status_error
from services.courier.partners.base import (
    WEBHOOK_TOLERANCE_S,
    Address,
    Booking,
    BookingRequest,
    EventKind,
    PartnerError,
    PartnerEvent,
    Sender,
    SettlementFormat,
    WebhookRejected,
    check_body_size,
    header,
)
from shared.webhook_signing import jnt_digest, verify_jnt_digest

JNT = "jnt"
ADD_ORDER_PATH = "/api/order/addOrder"
CANCEL_ORDER_PATH = "/api/order/cancelOrder"
SUCCESS_CODE = "1"

# What J&T expects back from a callback it should not resend.
JNT_ACK: dict[str, str] = {"code": "1", "msg": "success", "data": "SUCCESS"}

# J&T's scan times are local time in Jakarta (WIB), without an offset.
WIB = timezone(timedelta(hours=7), "WIB")
JNT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

SCAN_KINDS: dict[str, EventKind] = {
    "10": "picked_up",
    "20": "in_transit",  # departure from a hub
    "30": "in_transit",  # arrival at a hub
    "94": "in_transit",  # out for delivery
    "100": "delivered",
    "110": "delivery_failed",  # problem shipment
    "172": "in_transit",  # return to sender started
    "173": "returned",
}


def jnt_refusal(reason: str) -> dict[str, str]:
    """A J&T-style negative answer to a callback (J&T will send it again)."""
    return {"code": "0", "msg": reason, "data": "FAIL"}


def format_jnt_time(moment: datetime) -> str:
    return moment.astimezone(WIB).strftime(JNT_TIME_FORMAT)


def parse_jnt_time(text: str) -> datetime:
    return datetime.strptime(text, JNT_TIME_FORMAT).replace(tzinfo=WIB).astimezone(UTC)


def _receiver(name: str, phone: str, address: Address) -> dict[str, str]:
    return {
        "name": name,
        "mobile": phone,
        "phone": phone,
        "countryCode": "IDN",
        "prov": address.provinsi,
        "city": address.kabupaten_kota,
        "area": address.kecamatan,
        "town": address.kelurahan,
        "address": f"{address.street}, RT/RW {address.rt_rw}, {address.kelurahan}",
        "postCode": address.postal_code,
    }


def order_biz_content(request: BookingRequest, customer_code: str, sender: Sender | None) -> str:
    """The ``bizContent`` JSON of an addOrder call (pure)."""
    content: dict[str, Any] = {
        "customerCode": customer_code,
        "txlogisticId": request.order_ref,
        "serviceType": "01",  # pick-up at the sender
        "orderType": "1",
        "expressType": "EZ",  # regular service
        "goodsType": "DOCUMENT",
        "weight": "0.2",
        "itemsValue": "0",  # population documents have no price (UU 24/2013 Pasal 79A)
        "items": [{"itemName": request.item_description, "number": 1, "itemValue": "0"}],
        "receiver": _receiver(request.recipient_name, request.recipient_phone, request.address),
        "codInfo": {"codValue": str(request.cod_amount)},
        "remark": request.item_description,
    }
    if sender is not None:
        content["sender"] = _receiver(sender.name, sender.phone, sender.address)
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


# J&T's COD settlement (remittance) export: one line per collected waybill, times in WIB.
JNT_SETTLEMENT = SettlementFormat("billCode", "codValue", "payTime", JNT_TIME_FORMAT, WIB)


class JntPartner:
    name = JNT
    settlement_format = JNT_SETTLEMENT

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_account: str,
        private_key: str,
        timeout_s: float = 10.0,
        *,
        customer_code: str | None = None,
        sender: Sender | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_account = api_account
        self._private_key = private_key
        self._timeout_s = timeout_s
        self._customer_code = customer_code or api_account
        self._sender = sender
        self._clock = clock

    async def _call(self, path: str, biz_content: str) -> dict[str, Any]:
        headers = {
            "apiAccount": self._api_account,
            "digest": jnt_digest(biz_content, self._private_key),
            "timestamp": str(int(self._clock() * 1000)),
        }
        response = await send(
            self._http,
            JNT,
            "POST",
            self._base_url + path,
            self._timeout_s,
            headers=headers,
            data={"bizContent": biz_content},
        )
        if response.status_code >= 300:
            raise status_error(JNT, response)
        body = json_body(response)
        if not isinstance(body, dict):
            # Retrying is safe: J&T dedupes on txlogisticId.
            raise PartnerError(JNT, True, "unreadable response")
        if str(body.get("code")) != SUCCESS_CODE:
            raise PartnerError(JNT, False, f"refused: code {body.get('code')}: {body.get('msg')}")
        return body

    async def book(self, request: BookingRequest) -> Booking:
        body = await self._call(
            ADD_ORDER_PATH, order_biz_content(request, self._customer_code, self._sender)
        )
        data = body.get("data")
        bill_code = data.get("billCode") if isinstance(data, dict) else None
        if not isinstance(bill_code, str) or not bill_code:
            raise PartnerError(JNT, True, "success without billCode")
        return Booking(partner=JNT, waybill=bill_code, order_ref=request.order_ref)

    async def cancel(self, waybill: str) -> None:
        content = {
            "customerCode": self._customer_code,
            "billCode": waybill,
            "reason": "Dibatalkan oleh Dinas Dukcapil",
        }
        await self._call(CANCEL_ORDER_PATH, json.dumps(content, separators=(",", ":")))

    def parse_webhook(
        self, headers: Mapping[str, str], raw_body: bytes, now: float
    ) -> list[PartnerEvent]:
        check_body_size(raw_body)
        digest = header(headers, "digest")
        timestamp = header(headers, "timestamp")
        if not digest:
            raise WebhookRejected(401, "missing header digest")
        if not timestamp:
            raise WebhookRejected(401, "missing header timestamp")
        biz_content = biz_content_of(raw_body)
        if not verify_jnt_digest(biz_content, self._private_key, digest):
            raise WebhookRejected(401, "digest mismatch")
        try:
            sent_ms = int(timestamp.strip())
        except ValueError:
            raise WebhookRejected(401, "invalid header timestamp") from None
        if abs(now * 1000 - sent_ms) > WEBHOOK_TOLERANCE_S * 1000:
            raise WebhookRejected(401, "timestamp outside the 5-minute window")
        try:
            payload = json.loads(biz_content)
        except ValueError:
            raise WebhookRejected(400, "bizContent is not JSON") from None
        return parse_jnt_callback(payload)


def biz_content_of(raw_body: bytes) -> str:
    """The single ``bizContent`` field of a form-urlencoded body."""
    try:
        form = parse_qs(raw_body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected(400, "body is not a form") from None
    values = form.get("bizContent")
    if not values or len(values) != 1:
        raise WebhookRejected(400, "expected exactly one bizContent field")
    return values[0]


def _text(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    return str(value)


def _rupiah(value: Any) -> int:
    """J&T sends money as a string ("20000", sometimes "20000.00"); never go through float."""
    if isinstance(value, bool):
        raise TypeError("boolean is not an amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None
    if amount != amount.to_integral_value() or amount < 0:
        raise ValueError(f"not a whole rupiah amount: {value!r}")
    return int(amount)


def parse_jnt_callback(payload: Any) -> list[PartnerEvent]:
    """Turn a decoded tracking or COD callback into events (pure). Unknown scan codes are skipped,
    so J&T does not resend a callback forever because of a scan we do not track."""
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "bizContent is not a JSON object")
    bill_code = _text(payload, "billCode")
    if bill_code is None:
        raise WebhookRejected(400, "missing billCode")
    details, cod_details = payload.get("details"), payload.get("codDetails")
    if not isinstance(details, list) and not isinstance(cod_details, list):
        raise WebhookRejected(400, "expected details or codDetails")
    try:
        events = [_scan_event(bill_code, d) for d in details or []]
        events += [_cod_event(bill_code, d) for d in cod_details or []]
    except (ValueError, TypeError, AttributeError) as exc:
        raise WebhookRejected(400, f"malformed callback: {exc}") from None
    return [e for e in events if e is not None]


def _scan_event(bill_code: str, detail: Mapping[str, Any]) -> PartnerEvent | None:
    code = _text(detail, "scanTypeCode")
    kind = SCAN_KINDS.get(code or "")
    if kind is None:
        return None
    scan_time = _text(detail, "scanTime")
    if scan_time is None:
        raise ValueError("missing scanTime")
    occurred_at = parse_jnt_time(scan_time)
    # scanId is the dedupe key; without one, the scan itself (waybill, code, time) identifies it.
    event_id = _text(detail, "scanId") or f"{bill_code}:{code}:{scan_time}"
    reason = None
    if kind in ("delivery_failed", "returned"):
        reason = _text(detail, "problemReason") or _text(detail, "desc")
    elif code == "172":
        why = _text(detail, "problemReason") or _text(detail, "desc")
        reason = "return to sender started" + (f": {why}" if why else "")
    docs = detail.get("docsCollected")
    return PartnerEvent(
        partner=JNT,
        partner_event_id=f"jnt:{event_id}",
        waybill=bill_code,
        kind=kind,
        occurred_at=occurred_at,
        received_by=_text(detail, "signer") if kind == "delivered" else None,
        documents_collected=docs if isinstance(docs, bool) else None,
        reason=reason,
    )


def _cod_event(bill_code: str, detail: Mapping[str, Any]) -> PartnerEvent:
    pay_time = _text(detail, "payTime")
    if pay_time is None:
        raise ValueError("missing payTime")
    event_id = _text(detail, "codId") or f"{bill_code}:cod:{pay_time}"
    return PartnerEvent(
        partner=JNT,
        partner_event_id=f"jnt:{event_id}",
        waybill=bill_code,
        kind="cod_collected",
        occurred_at=parse_jnt_time(pay_time),
        cod_amount=_rupiah(detail.get("codValue")),
    )
