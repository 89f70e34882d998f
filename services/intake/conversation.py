"""The WhatsApp conversation that registers a request step by step (pure: no I/O).

``step(conversation, text)`` answers one inbound message with the next conversation, the replies
to send, and at most one action the caller performs with I/O (register the draft, look up a
status); the caller turns the action's outcome into replies with ``registered``, ``refused_*``
and ``status_reply``.

    idle --DAFTAR--> document -> nik -> name -> street -> rt_rw -> kelurahan -> kecamatan
         -> kabupaten_kota -> provinsi -> postal_code -> partner -> confirm --YA--> (register)

Anywhere: ``BATAL`` drops the draft, ``STATUS <kode>`` answers the status without losing the
place, ``BANTUAN`` repeats the help and the current question. The applicant's phone is the
WhatsApp sender's number. Replies never contain a NIK in full (DESIGN.md section 6).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from shared.contracts.events import DocumentType
from shared.contracts.money import format_rupiah
from shared.privacy import mask_nik

from .capacity import format_day
from .domain import DOCUMENT_NAMES, PARTNER_NAMES, REQUIREMENT_DOCUMENTS
from .validation import (
    InvalidValue,
    normalize_kabupaten_kota,
    normalize_province,
    normalize_rt_rw,
    normalize_tracking_code,
    validate_name,
    validate_nik,
    validate_place,
    validate_postal_code,
)

IDLE, CONFIRM = "idle", "confirm"
FLOW = (
    "document_type", "nik", "name", "street", "rt_rw", "kelurahan", "kecamatan",
    "kabupaten_kota", "provinsi", "postal_code", "partner",
)  # fmt: skip
DOCUMENT_MENU: tuple[DocumentType, ...] = tuple(DocumentType)


@dataclass(frozen=True)
class Conversation:
    state: str = IDLE
    draft: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Register:
    """Register the draft (it is complete and every field was checked when typed)."""

    draft: Mapping[str, str]


@dataclass(frozen=True)
class LookupStatus:
    tracking_code: str


Action = Register | LookupStatus


@dataclass(frozen=True)
class Step:
    conversation: Conversation
    replies: tuple[str, ...]
    action: Action | None = None


# ---- what each question accepts ------------------------------------------------------------


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.casefold())


_DOCUMENT_WORDS: dict[str, DocumentType] = {
    **{str(i): doc for i, doc in enumerate(DOCUMENT_MENU, start=1)},
    **{_key(doc.value): doc for doc in DocumentType},
    **{_key(name): doc for doc, name in DOCUMENT_NAMES.items()},
    "ktp": DocumentType.KTP_EL, "ektp": DocumentType.KTP_EL, "ktpelektronik": DocumentType.KTP_EL,
    "kartukeluarga": DocumentType.KK, "aktalahir": DocumentType.AKTA_KELAHIRAN,
    "aktekelahiran": DocumentType.AKTA_KELAHIRAN, "aktelahir": DocumentType.AKTA_KELAHIRAN,
    "aktakematian": DocumentType.AKTA_KEMATIAN, "aktekematian": DocumentType.AKTA_KEMATIAN,
    "aktanikah": DocumentType.AKTA_PERKAWINAN, "aktecerai": DocumentType.AKTA_PERCERAIAN,
    "pindah": DocumentType.SURAT_PINDAH, "suratpindah": DocumentType.SURAT_PINDAH,
}  # fmt: skip
_PARTNER_WORDS = {"1": "pos", "pos": "pos", "posindonesia": "pos", "2": "jnt", "jnt": "jnt",
                  "jt": "jnt", "jntexpress": "jnt", "jtexpress": "jnt"}  # fmt: skip


def _document(text: str) -> str:
    try:
        return _DOCUMENT_WORDS[_key(text)].value
    except KeyError:
        raise InvalidValue(f"pilih nomor 1-{len(DOCUMENT_MENU)} dari daftar") from None


def _partner(text: str) -> str:
    try:
        return _PARTNER_WORDS[_key(text)]
    except KeyError:
        raise InvalidValue("kurir itu tidak tersedia") from None


_CHECKS: dict[str, Callable[[str], str]] = {
    "document_type": _document,
    "nik": validate_nik,
    "name": validate_name,
    "street": lambda v: validate_place(v, "alamat jalan", 200),
    "rt_rw": normalize_rt_rw,
    "kelurahan": lambda v: validate_place(v, "kelurahan/desa"),
    "kecamatan": lambda v: validate_place(v, "kecamatan"),
    "kabupaten_kota": normalize_kabupaten_kota,
    "provinsi": normalize_province,
    "postal_code": validate_postal_code,
    "partner": _partner,
}


# ---- what is said --------------------------------------------------------------------------


def help_text(cod_fee: int) -> str:
    return (
        "Selamat datang di layanan antar dokumen Dukcapil (Ketanmu). Balas:\n"
        f"• DAFTAR — ajukan dokumen diantar ke rumah (ongkos kirim {format_rupiah(cod_fee)},"
        " dibayar tunai ke kurir)\n"
        "• STATUS <kode lacak> — cek status, mis. STATUS KTM-7QX2-94HD\n"
        "• BATAL — batalkan pendaftaran yang sedang diisi"
    )


def question(state: str) -> str:
    if state == "document_type":
        menu = "\n".join(f"{i}. {DOCUMENT_NAMES[d]}" for i, d in enumerate(DOCUMENT_MENU, 1))
        return f"Dokumen apa yang Anda ajukan? Balas dengan nomornya:\n{menu}"
    return {
        "nik": "Ketik NIK pemohon (16 digit, sesuai KTP atau KK).",
        "name": "Ketik nama lengkap pemohon sesuai KTP/KK.",
        "street": "Alamat pengiriman: ketik nama jalan, nomor rumah, dan dusun bila ada.",
        "rt_rw": "RT/RW? Contoh: 003/005",
        "kelurahan": "Kelurahan atau desa?",
        "kecamatan": "Kecamatan?",
        "kabupaten_kota": "Kabupaten atau kota? Contoh: Kabupaten Mojokerto",
        "provinsi": "Provinsi? Contoh: Jawa Timur",
        "postal_code": "Kode pos (5 digit)?",
        "partner": "Pilih kurir: balas 1 untuk Pos Indonesia, 2 untuk J&T Express.",
        CONFIRM: "Balas YA untuk mengirim permohonan, ULANG untuk mengisi dari awal, atau BATAL.",
    }[state]


def summary(draft: Mapping[str, str], cod_fee: int) -> str:
    doc = DocumentType(draft["document_type"])
    address = (
        f"{draft['street']}, RT/RW {draft['rt_rw']}, {draft['kelurahan']}, Kec. "
        f"{draft['kecamatan']}, {draft['kabupaten_kota']}, {draft['provinsi']} "
        f"{draft['postal_code']}"
    )
    return (
        "Periksa data permohonan Anda:\n"
        f"Dokumen: {DOCUMENT_NAMES[doc]}\n"
        f"NIK: {mask_nik(draft['nik'])}\n"
        f"Nama: {draft['name']}\n"
        f"Alamat: {address}\n"
        f"Kurir: {PARTNER_NAMES[draft['partner']]}\n"
        f"Ongkos kirim: {format_rupiah(cod_fee)}, dibayar tunai ke kurir saat dokumen diterima"
        " (dokumennya sendiri gratis).\n"
        f"Serahkan ke kurir: {', '.join(REQUIREMENT_DOCUMENTS[doc])}.\n\n" + question(CONFIRM)
    )


def _reason(exc: InvalidValue) -> str:
    return str(exc).split(" / ")[0]


# ---- the step ----------------------------------------------------------------------------


def _command(text: str) -> str:
    return text.strip().split(maxsplit=1)[0].upper() if text.strip() else ""


def step(conversation: Conversation, text: str | None, *, cod_fee: int) -> Step:
    """Answer one inbound message. ``text`` is None for a message that is not text."""
    state, draft = conversation.state, dict(conversation.draft)
    if text is None:
        if state == IDLE:
            return Step(conversation, (help_text(cod_fee),))
        return Step(conversation, ("Mohon balas dengan teks. " + question(state),))
    command = _command(text)
    if command == "STATUS":
        rest = text.strip()[len("STATUS") :].strip()
        code = normalize_tracking_code(rest) if rest else None
        if code is None:
            return Step(conversation, ("Tulis kode lacaknya, mis. STATUS KTM-7QX2-94HD",))
        return Step(conversation, (), LookupStatus(code))
    if command == "BATAL":
        if state == IDLE:
            return Step(Conversation(), ("Tidak ada pendaftaran yang sedang diisi.",))
        return Step(Conversation(), ("Pendaftaran dibatalkan dan data yang diisi dihapus.",))
    if command in ("BANTUAN", "HELP", "MENU"):
        replies = (help_text(cod_fee),) + (() if state == IDLE else (question(state),))
        return Step(conversation, replies)
    if state == IDLE:
        if command == "DAFTAR":
            return Step(Conversation("document_type"), (question("document_type"),))
        return Step(conversation, (help_text(cod_fee),))
    if state == CONFIRM:
        if command in ("YA", "Y", "OK", "KIRIM"):
            return Step(conversation, (), Register(draft))
        if command == "ULANG":
            return Step(Conversation("document_type"), (question("document_type"),))
        return Step(conversation, (question(CONFIRM),))
    try:
        draft[state] = _CHECKS[state](text)
    except InvalidValue as exc:
        return Step(conversation, (f"Maaf, {_reason(exc)}. {question(state)}",))
    following = FLOW.index(state) + 1
    if following < len(FLOW):
        nxt = FLOW[following]
        return Step(Conversation(nxt, draft), (question(nxt),))
    return Step(Conversation(CONFIRM, draft), (summary(draft, cod_fee),))


# ---- after the action --------------------------------------------------------------------


def registration_body(draft: Mapping[str, str], phone: str) -> dict[str, Any]:
    """The draft as the body ``POST /requests`` takes: one set of rules for every channel."""
    return {
        "document_type": draft["document_type"],
        "applicant": {"name": draft["name"], "nik": draft["nik"], "phone": phone},
        "delivery": {
            "partner": draft["partner"],
            "address": {
                k: draft[k]
                for k in ("street", "rt_rw", "kelurahan", "kecamatan", "kabupaten_kota",
                          "provinsi", "postal_code")
            },
        },
    }


def registered(
    tracking_code: str, document_type: str, partner: str, cod_fee: int, tracking_url: str
) -> Step:
    doc = DocumentType(document_type)
    return Step(
        Conversation(),
        (
            (f"Permohonan {DOCUMENT_NAMES[doc]} Anda terdaftar.\n"
            f"Kode lacak: {tracking_code}\n"
            f"Cek status kapan saja: balas STATUS {tracking_code} atau buka {tracking_url}\n"
            f"Dokumen diantar {PARTNER_NAMES[partner]}. Siapkan {format_rupiah(cod_fee)} untuk"
            f" ongkos kirim dan serahkan ke kurir: {', '.join(REQUIREMENT_DOCUMENTS[doc])}."),
        ),
    )


def refused_open(document_type: str, tracking_code: str | None, status_label: str) -> Step:
    name = DOCUMENT_NAMES[DocumentType(document_type)]
    if tracking_code:
        text = (
            f"Anda masih punya permohonan {name} yang sedang diproses (kode lacak {tracking_code},"
            f" status: {status_label}). Permohonan baru bisa diajukan setelah selesai."
        )
    else:
        text = (
            f"Untuk NIK ini masih ada permohonan {name} yang sedang diproses. Hubungi kantor"
            " Dukcapil bila perlu bantuan."
        )
    return Step(Conversation(), (text,))


def refused_quota(conversation: Conversation, document_type: str, next_day: date | None) -> Step:
    """The draft is kept: the applicant answers YA again on the day with room."""
    name = DOCUMENT_NAMES[DocumentType(document_type)]
    when = (
        f"Balas YA lagi mulai {format_day(next_day)} untuk mengirim permohonan ini."
        if next_day
        else "Hubungi kantor Dukcapil untuk jadwal berikutnya."
    )
    return Step(conversation, (f"Maaf, kuota {name} untuk hari ini sudah penuh. {when}",))


def refused_busy(conversation: Conversation, document_type: str) -> Step:
    """Load shedding: nothing is registered, the draft is kept, the applicant sends YA later."""
    name = DOCUMENT_NAMES[DocumentType(document_type)]
    text = (
        f"Maaf, sistem kami sedang sibuk melayani banyak permohonan. Data permohonan {name} Anda"
        " sudah tersimpan: balas YA lagi dalam beberapa menit untuk mengirimnya."
    )
    return Step(conversation, (text,))


def status_reply(tracking_code: str, view: Mapping[str, Any] | None) -> str:
    if view is None:
        return f"Kode lacak {tracking_code} tidak ditemukan untuk nomor WhatsApp ini."
    last = view["timeline"][-1] if view["timeline"] else None
    lines = [f"{view['document_name']} — {tracking_code}", f"Status: {view['status_label']}"]
    if last:
        lines.append(f"Terakhir: {last['label']}, {last['occurred_at_local']}")
    waybill = next((s["waybill"] for s in reversed(view["timeline"]) if s.get("waybill")), None)
    if waybill:
        lines.append(f"Kurir: {view['partner_name']}, resi {waybill}")
    return "\n".join(lines)
