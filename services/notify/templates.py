"""The WhatsApp messages, one per lifecycle event, in Bahasa Indonesia. Kept in one place.

Each is an approved template (name + body parameters) on the Cloud API; ``render`` gives the same
text, which is also what goes out as free text inside the 24-hour window. Never a NIK in a
message (DESIGN.md section 6): parameters are also scrubbed of anything shaped like one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.contracts import topics
from shared.contracts.money import format_rupiah

_WHITESPACE = re.compile(r"\s+")
_NIK_SHAPED = re.compile(r"(?<!\d)(\d{4})\d{8}(\d{4})(?!\d)")

PARTNER_NAMES = {"pos": "Pos Indonesia", "jnt": "J&T Express"}


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # the approved body, {1}..{n} filled from params in order
    params: tuple[str, ...]  # keys of the context, in order


TEMPLATES: dict[str, Template] = {
    topics.REQUEST_REGISTERED: Template(
        "ketanmu_terdaftar",
        "Halo {1}, permohonan {2} Anda sudah kami terima. Kode lacak: {3}. "
        "Kami kabari lagi saat dokumen selesai dicetak.",
        ("name", "document", "tracking_code"),
    ),
    topics.DOCUMENT_PRINTED: Template(
        "ketanmu_dicetak",
        "Halo {1}, dokumen {2} Anda (kode {3}) sudah dicetak dan siap dikirim. "
        "Perkiraan tiba 2-4 hari.",
        ("name", "document", "tracking_code"),
    ),
    topics.HANDED_TO_COURIER: Template(
        "ketanmu_dikirim",
        "Dokumen {1} Anda sudah diserahkan ke {2}, nomor resi {3}. "
        "Siapkan {4} dan berkas persyaratan asli: {5}.",
        ("document", "partner", "waybill", "cod", "requirements"),
    ),
    topics.DELIVERED: Template(
        "ketanmu_diterima",
        "Dokumen {1} (kode {2}) sudah diterima oleh {3}. Terima kasih.",
        ("document", "tracking_code", "received_by"),
    ),
    topics.COD_PAID: Template(
        "ketanmu_kwitansi_cod",
        "Pembayaran ongkos kirim {1} untuk resi {2} sudah diterima kurir {3}. "
        "Layanan dokumen kependudukan gratis; biaya ini hanya ongkos kirim.",
        ("amount", "waybill", "partner"),
    ),
    topics.REQUEST_REJECTED: Template(
        "ketanmu_ditolak",
        "Mohon maaf {1}, permohonan {2} (kode {3}) belum dapat diproses: {4}.",
        ("name", "document", "tracking_code", "reason"),
    ),
    topics.DELIVERY_FAILED: Template(
        "ketanmu_gagal_antar",
        "Kurir {1} belum berhasil mengantar dokumen Anda (resi {2}): {3}. Kurir akan mencoba lagi.",
        ("partner", "waybill", "reason"),
    ),
    topics.RETURNED_TO_OFFICE: Template(
        "ketanmu_kembali",
        "Dokumen Anda (resi {1}) dikembalikan ke kantor Dukcapil: {2}. Hubungi kami untuk "
        "pengiriman ulang atau pengambilan.",
        ("waybill", "reason"),
    ),
}

DOCUMENT_NAMES = {
    "kk": "Kartu Keluarga",
    "ktp_el": "KTP-el",
    "kia": "KIA",
    "akta_kelahiran": "Akta Kelahiran",
    "akta_kematian": "Akta Kematian",
    "akta_perkawinan": "Akta Perkawinan",
    "akta_perceraian": "Akta Perceraian",
    "akta_pengangkatan_anak": "Akta Pengangkatan Anak",
    "surat_pindah": "Surat Pindah",
}


def context(recipient: dict[str, Any], event_data: dict[str, Any]) -> dict[str, str]:
    """What a template may use: the recipient's non-sensitive facts and the event's data."""
    partner = event_data.get("partner") or recipient.get("partner") or ""
    amount = event_data.get("amount", event_data.get("cod_amount", recipient.get("cod_fee", 0)))
    return {
        "name": recipient["name"],
        "document": DOCUMENT_NAMES.get(recipient["document_type"], recipient["document_type"]),
        "tracking_code": recipient["tracking_code"],
        "partner": PARTNER_NAMES.get(partner, partner),
        "waybill": str(event_data.get("waybill", "")),
        "cod": format_rupiah(int(event_data.get("cod_amount", recipient.get("cod_fee", 0)))),
        "amount": format_rupiah(int(amount)),
        "requirements": ", ".join(recipient.get("requirement_documents") or []) or "-",
        "received_by": str(event_data.get("received_by") or "penerima"),
        "reason": str(event_data.get("reason", "")),
    }


def clean_param(value: str) -> str:
    """A template parameter Meta accepts (no new line, tab or run of 5+ spaces; not empty) and
    that never carries a NIK, e.g. typed by an operator into a rejection reason."""
    text = _NIK_SHAPED.sub(r"\1********\2", _WHITESPACE.sub(" ", value).strip())
    return text or "-"


def params_for(event_type: str, ctx: dict[str, str]) -> list[str]:
    return [clean_param(ctx[key]) for key in TEMPLATES[event_type].params]


_PLACEHOLDER = re.compile(r"\{(\d+)\}")


def render(event_type: str, params: list[str]) -> str:
    """The template's text with ``{1}``.. filled in one pass, as WhatsApp fills it: a parameter
    that itself contains ``{2}`` (free text: an address, an operator's reason) stays as written."""

    def fill(match: re.Match[str]) -> str:
        i = int(match.group(1))
        return params[i - 1] if 1 <= i <= len(params) else match.group(0)

    return _PLACEHOLDER.sub(fill, TEMPLATES[event_type].text)
