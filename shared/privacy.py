"""Masking of personal data (UU PDP No. 27/2022): never log a NIK or phone number in full."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NIK_RE = re.compile(r"(?<!\d)(\d{4})\d{8}(\d{4})(?!\d)")
# A mobile number as people type it (every form intake's normalize_phone accepts): the country
# code (+62, 62, 0062, "(+62)", with "0" or "(0)" after it) or the trunk 0 ("(0812)" too), then
# 8, then digits with spaces, dots, dashes or brackets between them. A match with fewer than 10
# digits is left alone: a date (08.12.2026) or an address (62.81.234.56) is not a phone.
_PHONE_RE = re.compile(
    r"(?<![\w+])((?:\(?(?:\+|00)?62\)?[\s.-]*(?:\(0\)|0)?[\s.-]*|\(?0)8)"
    r"[\d\s.()-]{6,16}(\d{2})(?!\d)"
)
_PHONE_MIN_DIGITS = 10


def mask_nik(nik: str) -> str:
    """``3516014101900001`` -> ``3516********0001``."""
    if len(nik) <= 8:
        return "*" * len(nik)
    return nik[:4] + "*" * (len(nik) - 8) + nik[-4:]


def mask_phone(phone: str) -> str:
    """``+6281234567890`` -> ``+628*********90``."""
    if len(phone) <= 6:
        return "*" * len(phone)
    keep = 4 if phone.startswith("+") else 3
    return phone[:keep] + "*" * (len(phone) - keep - 2) + phone[-2:]


def mask_text(text: str) -> str:
    """Mask every NIK-shaped and phone-shaped run of digits inside free text."""
    text = _NIK_RE.sub(lambda m: m.group(1) + "********" + m.group(2), text)
    return _PHONE_RE.sub(_mask_phone_match, text)


def _mask_phone_match(match: re.Match[str]) -> str:
    if sum(c.isdigit() for c in match.group(0)) < _PHONE_MIN_DIGITS:
        return match.group(0)
    return match.group(1) + "******" + match.group(2)


def mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_value(v) for v in value)
    return value
