"""Signatures of the webhooks Ketanmu sends and receives (pure functions, no I/O).

Three schemes, one per counterpart:

- Meta (WhatsApp Cloud API): ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``.
- Standard Webhooks (https://www.standardwebhooks.com), our choice for Pos Indonesia, which has no
  public spec: headers ``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>``, several space-separated).
- J&T Open Platform: ``digest = base64(md5(bizContent + private key))``.

Every comparison is constant-time (:func:`hmac.compare_digest`) so a caller cannot learn a valid
signature byte by byte from response times.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

META_SIGNATURE_HEADER = "X-Hub-Signature-256"
STANDARD_ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
DEFAULT_TOLERANCE_S = 300

_META_PREFIX = "sha256="
_STANDARD_VERSION = "v1"
# Standard Webhooks secrets may be given as "whsec_<base64 key>"; a plain string is used as is.
_STANDARD_SECRET_PREFIX = "whsec_"


class SignatureError(Exception):
    """A webhook failed verification; ``reason`` is safe to log and to answer with."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def hmac_sha256_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


# --- Meta / WhatsApp -------------------------------------------------------------------------


def sign_meta(app_secret: str, raw_body: bytes) -> str:
    """The value of ``X-Hub-Signature-256`` that Meta sends for ``raw_body``."""
    return _META_PREFIX + hmac_sha256_hex(app_secret.encode(), raw_body)


def verify_meta_signature(app_secret: str, raw_body: bytes, header_value: str | None) -> bool:
    if not header_value or not header_value.startswith(_META_PREFIX):
        return False
    expected = sign_meta(app_secret, raw_body)
    return hmac.compare_digest(expected.encode(), header_value.strip().encode())


# --- Standard Webhooks (Pos Indonesia) ---------------------------------------------------------


def _standard_key(secret: str) -> bytes:
    if secret.startswith(_STANDARD_SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(_STANDARD_SECRET_PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise ValueError("webhook secret after 'whsec_' is not valid base64") from exc
    return secret.encode()


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    return f"{_STANDARD_VERSION}," + base64.b64encode(mac).decode()


def _window_text(tolerance_s: int) -> str:
    if tolerance_s % 60 == 0:
        return f"{tolerance_s // 60}-minute window"
    return f"{tolerance_s}-second window"


def verify_standard(
    secret: str,
    msg_id: str | None,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    now: float,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise :class:`SignatureError` unless one of the signatures matches and the time is fresh.

    The timestamp is checked first: it is part of the signed content, so a replayed old message
    fails even with its original, valid signature.
    """
    if not msg_id:
        raise SignatureError(f"missing header {STANDARD_ID_HEADER}")
    if not timestamp_header:
        raise SignatureError(f"missing header {STANDARD_TIMESTAMP_HEADER}")
    if not signature_header:
        raise SignatureError(f"missing header {STANDARD_SIGNATURE_HEADER}")
    try:
        timestamp = int(timestamp_header.strip())
    except ValueError:
        raise SignatureError(f"invalid header {STANDARD_TIMESTAMP_HEADER}") from None
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp outside the {_window_text(tolerance_s)}")
    expected = sign_standard(secret, msg_id, timestamp, body).encode()
    for candidate in signature_header.split():
        # Other versions (e.g. asymmetric "v1a") are skipped, as the spec asks.
        if candidate.startswith(f"{_STANDARD_VERSION},") and hmac.compare_digest(
            expected, candidate.encode()
        ):
            return
    raise SignatureError("signature mismatch")


# --- J&T Express ------------------------------------------------------------------------------


def jnt_digest(biz_content: str, private_key: str) -> str:
    """J&T's ``digest`` header: base64(md5(bizContent + private key)).

    md5 is J&T's choice, not ours; it is kept because it is their wire format.
    """
    raw = hashlib.md5((biz_content + private_key).encode(), usedforsecurity=False).digest()
    return base64.b64encode(raw).decode()


def verify_jnt_digest(biz_content: str, private_key: str, digest: str | None) -> bool:
    if not digest:
        return False
    expected = jnt_digest(biz_content, private_key)
    return hmac.compare_digest(expected.encode(), digest.strip().encode())
