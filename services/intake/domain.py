"""Intake's domain: what a request needs, and the status the applicant sees. No I/O here."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from shared.contracts import topics
from shared.contracts.events import DocumentType

# Phone rules live with the other input rules; re-exported here for existing callers.
from .validation import TRACKING_ALPHABET, InvalidPhone, normalize_phone

__all__ = ["InvalidPhone", "normalize_phone"]

# What the courier collects at the door, per document type: one place, used by every channel.
REQUIREMENT_DOCUMENTS: dict[DocumentType, list[str]] = {
    DocumentType.KK: ["KK lama (asli)", "Surat pengantar RT/RW (asli)"],
    # a replacement: the old card is withdrawn; if it was lost, the police report instead
    DocumentType.KTP_EL: ["KTP-el lama (asli) atau surat keterangan kehilangan dari kepolisian"],
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


def new_tracking_code() -> str:
    """``KTM-7QX2-94HD``: 40 random bits, unguessable enough with rate-limited lookups."""
    chars = "".join(secrets.choice(TRACKING_ALPHABET) for _ in range(8))
    return f"KTM-{chars[:4]}-{chars[4:]}"


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
TERMINAL = frozenset({"delivered", "returned_to_office", "rejected"})

# What the applicant reads, per status and per timeline event.
STATUS_LABELS: dict[str, str] = {
    "registered": "Terdaftar, menunggu dicetak",
    "printed": "Dokumen sudah dicetak, menunggu dijemput kurir",
    "handed_to_courier": "Dalam pengantaran oleh kurir",
    "delivery_failed": "Pengantaran gagal, kurir akan mencoba lagi",
    "delivered": "Sudah diterima",
    "returned_to_office": "Dikembalikan ke kantor Dukcapil",
    "rejected": "Ditolak",
}
EVENT_LABELS: dict[str, str] = {
    topics.REQUEST_REGISTERED: "Permohonan terdaftar",
    topics.DOCUMENT_PRINTED: "Dokumen dicetak",
    topics.HANDED_TO_COURIER: "Diserahkan ke kurir",
    topics.COD_PAID: "Ongkos kirim dibayar",
    topics.DELIVERED: "Diterima",
    topics.REQUEST_REJECTED: "Permohonan ditolak",
    topics.DELIVERY_FAILED: "Pengantaran gagal",
    topics.RETURNED_TO_OFFICE: "Dikembalikan ke kantor",
}
PARTNER_NAMES: dict[str, str] = {"pos": "Pos Indonesia", "jnt": "J&T Express"}

# Documents about another person than the applicant (a child, the deceased): a parent may rightly
# have two open at once (twins' KIA). Only an operator can register the second one.
ABOUT_ANOTHER_PERSON = frozenset(
    {
        DocumentType.KIA,
        DocumentType.AKTA_KELAHIRAN,
        DocumentType.AKTA_KEMATIAN,
        DocumentType.AKTA_PENGANGKATAN_ANAK,
    }
)


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
