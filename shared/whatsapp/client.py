"""WhatsApp Business Cloud API client (outbound messages) and the webhook parsers.

No retries here: the notify service retries from its database, and must not resend a message
whose first attempt may have been accepted (a timeout is ambiguous; see WhatsAppError.ambiguous).

The Cloud API has no idempotency key. What it does have is ``biz_opaque_callback_data``: a string
sent with a message and echoed in every status callback of that message. A sender that puts its own
reference there learns from the callbacks that a message it never got an answer for was accepted.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

import httpx

from shared.http_client import post_json

StatusName = Literal["sent", "delivered", "read", "failed"]
_STATUS_NAMES: frozenset[str] = frozenset({"sent", "delivered", "read", "failed"})

# Meta error codes that mean "not now" rather than "never": throttling and temporary outages.
# https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
TRANSIENT_META_CODES: frozenset[int] = frozenset(
    {1, 2, 4, 80007, 130429, 131000, 131016, 131048, 131056, 133004}
)

_NON_DIGITS = re.compile(r"[\s\-().]")


class WhatsAppError(Exception):
    """A send failed. ``transient``: 429, 5xx, timeouts, connection errors, throttling codes.

    ``ambiguous``: the request left us and no answer came back (a read timeout, a connection
    dropped mid-answer): Meta may have accepted the message. Resending it at once could send it
    twice.
    """

    def __init__(
        self, transient: bool, status: int | None, reason: str, *, ambiguous: bool = False
    ) -> None:
        super().__init__(
            f"WhatsApp: {reason} (HTTP {status}, {'transient' if transient else 'permanent'})"
        )
        self.transient = transient
        self.status = status
        self.reason = reason
        self.ambiguous = ambiguous


# Raised before the request was (fully) sent: Meta cannot have accepted anything.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.UnsupportedProtocol,
)


def wa_recipient(phone: str) -> str:
    """The Cloud API's ``to``: digits with country code, no '+'. Accepts +62..., 62... and 08..."""
    digits = _NON_DIGITS.sub("", phone).removeprefix("+")
    if digits.startswith("0"):
        digits = "62" + digits[1:]  # Indonesian local form 08xx
    if not digits.isdigit() or not 8 <= len(digits) <= 15:
        raise ValueError("not a phone number in international form")
    return digits


def _message(
    to: str, kind: str, content: dict[str, Any], callback_data: str | None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": wa_recipient(to),
        "type": kind,
        kind: content,
    }
    if callback_data:
        message["biz_opaque_callback_data"] = callback_data  # echoed in its status callbacks
    return message


def template_body(
    to: str,
    template: str,
    params: list[str],
    language: str = "id",
    callback_data: str | None = None,
) -> dict[str, Any]:
    """The Cloud API body of a template message (pure)."""
    body: dict[str, Any] = {"name": template, "language": {"code": language}}
    if params:
        body["components"] = [
            {"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}
        ]
    return _message(to, "template", body, callback_data)


def text_body(to: str, body: str, callback_data: str | None = None) -> dict[str, Any]:
    return _message(to, "text", {"preview_url": False, "body": body}, callback_data)


class WhatsAppClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        phone_number_id: str,
        access_token: str,
        api_version: str = "v21.0",
        timeout_s: float = 10.0,
    ) -> None:
        self._http = http
        # parsed once, not for every message (httpx parses a str URL and builds headers per call)
        self._url = f"{base_url.rstrip('/')}/{api_version}/{phone_number_id}/messages"
        self._headers = {"Authorization": f"Bearer {access_token}"}
        self._timeout = httpx.Timeout(timeout_s)

    async def send_template(
        self,
        to: str,
        template: str,
        params: list[str],
        language: str = "id",
        callback_data: str | None = None,
    ) -> str:
        """Send an approved template; return the message's wamid."""
        return await self._send(
            _build(template_body, to, template, params, language, callback_data)
        )

    async def send_text(self, to: str, body: str, callback_data: str | None = None) -> str:
        """Free-form text: Meta delivers it only within 24 hours of the applicant's last message."""
        return await self._send(_build(text_body, to, body, callback_data))

    async def _send(self, body: dict[str, Any]) -> str:
        try:
            response = await post_json(
                self._http, self._url, body, headers=self._headers, timeout=self._timeout
            )
        except _NOT_SENT as exc:
            raise WhatsAppError(True, None, f"not sent ({type(exc).__name__})") from exc
        except httpx.TimeoutException as exc:
            # Ambiguous: Meta may have accepted it. The caller decides whether a resend is worse.
            raise WhatsAppError(
                True, None, f"timeout ({type(exc).__name__})", ambiguous=True
            ) from exc
        except httpx.RequestError as exc:
            raise WhatsAppError(
                True, None, f"connection error ({type(exc).__name__})", ambiguous=True
            ) from exc
        payload = _json(response)
        if response.status_code >= 300:
            raise _error_from(response.status_code, payload)
        try:
            wamid = payload["messages"][0]["id"]
        except (TypeError, KeyError, IndexError):
            wamid = None
        if not isinstance(wamid, str) or not wamid:
            raise WhatsAppError(False, response.status_code, "accepted without a message id")
        return wamid


def _build(builder: Any, *args: Any) -> dict[str, Any]:
    try:
        return cast(dict[str, Any], builder(*args))
    except ValueError as exc:
        raise WhatsAppError(False, None, f"invalid recipient: {exc}") from None


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_from(status: int, payload: Any) -> WhatsAppError:
    error = payload.get("error") if isinstance(payload, dict) else None
    code: int | None = None
    reason = f"HTTP {status}"
    if isinstance(error, dict):
        raw_code = error.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        reason = str(error.get("message") or reason)
        data = error.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        if details:
            reason += f": {details}"
        if code is not None:
            reason += f" (code {code})"
    transient = status == 429 or status >= 500 or code in TRANSIENT_META_CODES
    return WhatsAppError(transient, status, reason)


# --- status callbacks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusError:
    code: int | None
    title: str | None
    message: str | None
    details: str | None


@dataclass(frozen=True)
class MessageStatus:
    id: str  # the wamid returned by send_*
    status: StatusName
    timestamp: datetime  # aware, UTC
    recipient_id: str
    errors: tuple[StatusError, ...] = ()
    phone_number_id: str | None = None  # which of our numbers sent it
    callback_data: str | None = None  # the message's biz_opaque_callback_data, echoed by Meta


def _status_error(raw: Mapping[str, Any]) -> StatusError:
    data = raw.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    code = raw.get("code")
    return StatusError(
        code=code if isinstance(code, int) else None,
        title=raw.get("title"),
        message=raw.get("message"),
        details=details,
    )


def _one_status(raw: Any, phone_number_id: str | None) -> MessageStatus | None:
    if not isinstance(raw, dict):
        return None
    wamid, status, ts, recipient = (
        raw.get("id"),
        raw.get("status"),
        raw.get("timestamp"),
        raw.get("recipient_id"),
    )
    if not isinstance(wamid, str) or status not in _STATUS_NAMES or not isinstance(recipient, str):
        return None
    timestamp = _timestamp(ts)
    if timestamp is None:
        return None
    errors = tuple(_status_error(e) for e in raw.get("errors") or [] if isinstance(e, dict))
    opaque = raw.get("biz_opaque_callback_data")
    return MessageStatus(
        id=wamid,
        status=cast(StatusName, status),
        timestamp=timestamp,
        recipient_id=recipient,
        errors=errors,
        phone_number_id=phone_number_id,
        callback_data=opaque if isinstance(opaque, str) and opaque else None,
    )


def _timestamp(raw: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(raw), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _values(payload: Mapping[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """Each ``entry[].changes[].value`` with the phone-number id it is about."""
    found: list[tuple[dict[str, Any], str | None]] = []
    for entry in payload.get("entry") or []:
        for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                continue
            metadata = value.get("metadata")
            phone_id = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
            found.append((value, phone_id))
    return found


def parse_status_callback(payload: Mapping[str, Any]) -> list[MessageStatus]:
    """Every status in ``entry[].changes[].value.statuses[]``, in payload order (pure).

    Statuses may repeat and arrive out of order (Meta's own warning); the caller dedupes on
    (id, status) and never moves a message backwards (read is not undone by a late 'sent').
    Entries it cannot read are skipped: Meta adds fields and kinds without notice.
    """
    found: list[MessageStatus] = []
    for value, phone_id in _values(payload):
        for raw in value.get("statuses") or []:
            status = _one_status(raw, phone_id)
            if status is not None:
                found.append(status)
    return found


@dataclass(frozen=True)
class InboundMessage:
    """A message an applicant sent us: it opens (or renews) the 24-hour customer-service window."""

    id: str  # its wamid
    wa_id: str  # the sender, digits with country code
    timestamp: datetime  # aware, UTC
    type: str  # text, image, button, ...
    phone_number_id: str | None = None  # which of our numbers received it


def parse_inbound_messages(payload: Mapping[str, Any]) -> list[InboundMessage]:
    """Every message in ``entry[].changes[].value.messages[]``, in payload order (pure)."""
    found: list[InboundMessage] = []
    for value, phone_id in _values(payload):
        for raw in value.get("messages") or []:
            if not isinstance(raw, dict):
                continue
            wamid, sender = raw.get("id"), raw.get("from")
            timestamp = _timestamp(raw.get("timestamp"))
            if not isinstance(wamid, str) or not isinstance(sender, str) or timestamp is None:
                continue
            kind = raw.get("type")
            found.append(
                InboundMessage(
                    wamid, sender, timestamp, kind if isinstance(kind, str) else "", phone_id
                )
            )
    return found


def subscription_challenge(params: Mapping[str, str], verify_token: str) -> str | None:
    """Meta's webhook verification: the ``hub.challenge`` to echo, or None when it is not ours."""
    token = params.get("hub.verify_token", "")
    if params.get("hub.mode") != "subscribe" or not hmac.compare_digest(
        token.encode(), verify_token.encode()
    ):
        return None
    return params.get("hub.challenge")
