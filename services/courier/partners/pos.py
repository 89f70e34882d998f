"""Pos Indonesia adapter.

Pos publishes no API spec; the contracted integration is modelled as: an OAuth2 client-credentials
token (``POST /oauth2/token``), order posting with a ``cod`` flag and ``codvalue``
(``POST /api/v1/orders``, answered with ``{"awb": ...}``), cancel by AWB, and tracking webhooks signed
the Standard Webhooks way (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from services.courier.partners._http import json_body, send, status_error
from services.courier.partners.base import (
    WEBHOOK_TOLERANCE_S,
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
from shared.webhook_signing import (
    STANDARD_ID_HEADER,
    STANDARD_SIGNATURE_HEADER,
    STANDARD_TIMESTAMP_HEADER,
    SignatureError,
    verify_standard,
)

POS = "pos"
TOKEN_PATH = "/oauth2/token"
ORDERS_PATH = "/api/v1/orders"

POS_EVENT_KINDS: dict[str, EventKind] = {
    "pickup": "picked_up",
    "in_transit": "in_transit",
    "cod_collected": "cod_collected",
    "delivered": "delivered",
    "failed": "delivery_failed",
    "returned": "returned",
}
POS_EVENT_NAMES: dict[EventKind, str] = {kind: name for name, kind in POS_EVENT_KINDS.items()}


def order_body(request: BookingRequest, sender: Sender | None) -> dict[str, Any]:
    """The JSON of a Pos order posting (pure)."""
    a = request.address
    body: dict[str, Any] = {
        "orderid": request.order_ref,
        "cod": True,
        "codvalue": request.cod_amount,
        "itemdesc": request.item_description,
        "itemtype": "document",
        "weight": 200,  # grams
        "receivername": request.recipient_name,
        "receiverphone": request.recipient_phone,
        "receiveraddress": a.street,
        "receiverrtrw": a.rt_rw,
        "receiversubdistrict": a.kelurahan,
        "receiverdistrict": a.kecamatan,
        "receivercity": a.kabupaten_kota,
        "receiverprovince": a.provinsi,
        "receiverzipcode": a.postal_code,
    }
    if sender is not None:
        s = sender.address
        body |= {
            "sendername": sender.name,
            "senderphone": sender.phone,
            "senderaddress": f"{s.street}, RT/RW {s.rt_rw}, {s.kelurahan}, {s.kecamatan}",
            "sendercity": s.kabupaten_kota,
            "senderprovince": s.provinsi,
            "senderzipcode": s.postal_code,
        }
    return body


# Pos's COD settlement export: one line per collected AWB, RFC 3339 times.
POS_SETTLEMENT = SettlementFormat("awb", "codvalue", "paid_at")


class PosPartner:
    name = POS
    settlement_format = POS_SETTLEMENT

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        client_id: str,
        client_secret: str,
        webhook_secret: str,
        timeout_s: float = 10.0,
        *,
        sender: Sender | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._webhook_secret = webhook_secret
        self._timeout_s = timeout_s
        self._sender = sender
        self._clock = clock
        self._token: str | None = None
        self._token_refresh_at = 0.0
        # One token fetch at a time: a burst of bookings must not stampede the token endpoint.
        self._token_lock = asyncio.Lock()

    # --- OAuth2 ---------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        if self._token is not None and self._clock() < self._token_refresh_at:
            return self._token
        async with self._token_lock:
            if self._token is not None and self._clock() < self._token_refresh_at:
                return self._token
            self._token, lifetime = await self._fetch_token()
            # Renew a little before expiry so a request never leaves with a dying token.
            self._token_refresh_at = self._clock() + lifetime - min(60.0, lifetime / 10)
            return self._token

    async def _fetch_token(self) -> tuple[str, float]:
        response = await send(
            self._http,
            POS,
            "POST",
            self._base_url + TOKEN_PATH,
            self._timeout_s,
            data={"grant_type": "client_credentials"},
            auth=(self._client_id, self._client_secret),
        )
        body = json_body(response)
        if response.status_code >= 300:
            error = body.get("error") if isinstance(body, dict) else None
            raise status_error(POS, response, f"token refused: {error or 'no detail'}")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise PartnerError(POS, True, "token response without access_token")
        expires_in = body.get("expires_in", 3600)
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        return token, lifetime

    def _forget_token(self, token: str) -> None:
        # Only the token that was refused; a concurrent request may already have a new one.
        if self._token == token:
            self._token = None

    async def _authorized(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call with the bearer token; on 401 fetch a new token and try exactly once more
        (Pos may revoke a token before its announced expiry, e.g. on key rotation)."""
        token = await self._access_token()
        response = await self._send_with(token, method, path, **kwargs)
        if response.status_code == 401:
            self._forget_token(token)
            response = await self._send_with(await self._access_token(), method, path, **kwargs)
        return response

    async def _send_with(self, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        url = self._base_url + path
        return await send(self._http, POS, method, url, self._timeout_s, headers=headers, **kwargs)

    # --- orders -------------------------------------------------------------------------------

    async def book(self, request: BookingRequest) -> Booking:
        response = await self._authorized(
            "POST", ORDERS_PATH, json=order_body(request, self._sender)
        )
        body = json_body(response)
        if response.status_code >= 300:
            raise status_error(POS, response, _detail(body))
        awb = body.get("awb") if isinstance(body, dict) else None
        if not isinstance(awb, str) or not awb:
            # Retrying is safe: Pos dedupes on orderid.
            raise PartnerError(POS, True, "order response without awb")
        return Booking(partner=POS, waybill=awb, order_ref=request.order_ref)

    async def cancel(self, waybill: str) -> None:
        response = await self._authorized("POST", f"{ORDERS_PATH}/{waybill}/cancel")
        if response.status_code >= 300:
            raise status_error(POS, response, _detail(json_body(response)))

    # --- webhooks -------------------------------------------------------------------------------

    def parse_webhook(
        self, headers: Mapping[str, str], raw_body: bytes, now: float
    ) -> list[PartnerEvent]:
        check_body_size(raw_body)
        try:
            verify_standard(
                self._webhook_secret,
                header(headers, STANDARD_ID_HEADER),
                header(headers, STANDARD_TIMESTAMP_HEADER),
                header(headers, STANDARD_SIGNATURE_HEADER),
                raw_body,
                now,
                WEBHOOK_TOLERANCE_S,
            )
        except SignatureError as exc:
            raise WebhookRejected(401, exc.reason) from None
        try:
            payload = json.loads(raw_body)
        except ValueError:
            raise WebhookRejected(400, "body is not JSON") from None
        return parse_pos_callback(payload)


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or "")
    return ""


def _optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WebhookRejected(400, f"{key} must be a string")
    return value or None


def parse_pos_callback(payload: Any) -> list[PartnerEvent]:
    """Turn a decoded Pos webhook into events (pure). An event name we do not know is skipped (and
    acknowledged), so Pos does not resend it forever."""
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    event_id, awb, event = payload.get("id"), payload.get("awb"), payload.get("event")
    for key, value in (("id", event_id), ("awb", awb), ("event", event)):
        if not isinstance(value, str) or not value:
            raise WebhookRejected(400, f"missing {key}")
    kind = POS_EVENT_KINDS.get(event)
    if kind is None:
        return []
    try:
        occurred_at = datetime.fromisoformat(str(payload.get("occurred_at")))
    except ValueError:
        raise WebhookRejected(400, "occurred_at is not an RFC 3339 time") from None
    if occurred_at.tzinfo is None:
        raise WebhookRejected(400, "occurred_at has no UTC offset")
    cod_amount = payload.get("cod_amount")
    if cod_amount is not None and (isinstance(cod_amount, bool) or not isinstance(cod_amount, int)):
        raise WebhookRejected(400, "cod_amount must be an integer number of rupiah")
    if kind == "cod_collected" and cod_amount is None:
        raise WebhookRejected(400, "cod_collected without cod_amount")
    docs = payload.get("documents_collected")
    if docs is not None and not isinstance(docs, bool):
        raise WebhookRejected(400, "documents_collected must be a boolean")
    return [
        PartnerEvent(
            partner=POS,
            partner_event_id=f"pos:{event_id}",
            waybill=awb,
            kind=kind,
            occurred_at=occurred_at.astimezone(UTC),
            cod_amount=cod_amount,
            received_by=_optional_str(payload, "received_by"),
            documents_collected=docs,
            reason=_optional_str(payload, "reason"),
        )
    ]
