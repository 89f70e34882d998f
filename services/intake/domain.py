"""Intake's domain: what a request needs, and the status the applicant sees. No I/O here."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from shared.contracts import topics
from shared.contracts.events import DocumentType

# What the courier collects at the door, per document type: one place, used by every channel.
REQUIREMENT_DOCUMENTS: dict[DocumentType, list[str]] = {
    DocumentType.KK: ["KK lama (asli)", "Surat pengantar RT/RW (asli)"],
    DocumentType.KTP_EL: ["KTP-el lama (asli)"],
    DocumentType.KIA: ["Akta kelahiran anak (fotokopi)", "Pas foto anak 2x3"],
    DocumentType.AKTA_KELAHIRAN: ["Surat keterangan lahir dari bidan/rumah sakit (asli)"],
    DocumentType.AKTA_KEMATIAN: ["Surat keterangan kematian (asli)"],
    DocumentType.AKTA_PERKAWINAN: ["Surat keterangan perkawinan dari pemuka agama (asli)"],
    DocumentType.AKTA_PERCERAIAN: ["Salinan putusan pengadilan (asli)"],
    DocumentType.AKTA_PENGANGKATAN_ANAK: ["Salinan penetapan pengadilan (asli)"],
    DocumentType.SURAT_PINDAH: ["KK lama (asli)"],
}

DOCUMENT_NAMES: dict[DocumentType, str] = {
    DocumentType.KK: "Kartu Keluarga",
    DocumentType.KTP_EL: "KTP-el",
    DocumentType.KIA: "Kartu Identitas Anak",
    DocumentType.AKTA_KELAHIRAN: "Akta Kelahiran",
    DocumentType.AKTA_KEMATIAN: "Akta Kematian",
    DocumentType.AKTA_PERKAWINAN: "Akta Perkawinan",
    DocumentType.AKTA_PERCERAIAN: "Akta Perceraian",
    DocumentType.AKTA_PENGANGKATAN_ANAK: "Akta Pengangkatan Anak",
    DocumentType.SURAT_PINDAH: "Surat Pindah",
}

# Crockford base32 without I, L, O, U: easy to read aloud and type from a WhatsApp message.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_tracking_code() -> str:
    """``KTM-7QX2-94HD``: 40 random bits, unguessable enough with rate-limited lookups."""
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"KTM-{chars[:4]}-{chars[4:]}"


class InvalidPhone(ValueError):
    pass


def normalize_phone(raw: str) -> str:
    """Any form people type (``0812-3456-789``, ``62812…``, ``+62 812…``) -> ``+62812…``."""
    digits = re.sub(r"[\s\-().]", "", raw)
    if digits.startswith("+"):
        digits = digits[1:]
        if not digits.startswith("62"):
            raise InvalidPhone("nomor harus nomor Indonesia (+62) / must be an Indonesian number")
    if not digits.isdigit():
        raise InvalidPhone("nomor hanya boleh berisi angka / digits only")
    if digits.startswith("0"):
        digits = "62" + digits[1:]
    elif digits.startswith("8"):
        digits = "62" + digits
    if not digits.startswith("628"):
        raise InvalidPhone("nomor ponsel harus diawali 08 atau +628 / mobile numbers start 08 or +628")
    national = digits[2:]
    if not 9 <= len(national) <= 13:
        raise InvalidPhone("panjang nomor ponsel tidak sah / wrong length for a mobile number")
    return "+" + digits


# ---- the status the applicant sees ---------------------------------------------------------

STATUS_OF_EVENT: dict[str, str] = {
    topics.REQUEST_REGISTERED: "registered",
    topics.DOCUMENT_PRINTED: "printed",
    topics.HANDED_TO_COURIER: "handed_to_courier",
    topics.DELIVERY_FAILED: "delivery_failed",
    topics.DELIVERED: "delivered",
    topics.RETURNED_TO_OFFICE: "returned_to_office",
    topics.REQUEST_REJECTED: "rejected",
}
# Events on different topics arrive in any order; the status only moves forward.
_RANK = {
    "registered": 10,
    "printed": 20,
    "handed_to_courier": 30,
    "delivery_failed": 35,
    "delivered": 40,
    "returned_to_office": 50,
    "rejected": 60,
}
TERMINAL = {"delivered", "returned_to_office", "rejected"}


@dataclass(frozen=True)
class StatusChange:
    status: str
    changed: bool
    note: str | None = None  # set when the event could not move the status (recorded, not raised)


def apply_event(current: str, event_type: str) -> StatusChange:
    """The request's status after ``event_type``; cod-paid never changes it (a flag does)."""
    target = STATUS_OF_EVENT.get(event_type)
    if target is None:
        return StatusChange(current, False)
    if current == "rejected" and target != "rejected":
        return StatusChange(current, False, f"{event_type} after the request was rejected")
    if _RANK[target] > _RANK[current]:
        return StatusChange(target, True)
    return StatusChange(current, False)
