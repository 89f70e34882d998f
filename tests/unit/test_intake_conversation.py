"""The WhatsApp conversation (pure), the capacity rules and the public tracking page."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from services.intake import conversation as conv
from services.intake.capacity import format_day, format_moment, next_day_with_room, quota_for
from services.intake.inputs import RegistrationIn
from services.intake.tracking import render_page
from services.intake.whatsapp import inbound_messages
from shared.contracts.events import DocumentType

FEE = 20_000
PHONE = "+6281234567890"
ANSWERS = [
    ("DAFTAR", "document_type"), ("2", "nik"), ("3516 0141 0190 0001", "name"),
    ("Siti Aminah", "street"), ("Jl. Raya Mojosari No. 12", "rt_rw"), ("3/5", "kelurahan"),
    ("Mojosari", "kecamatan"), ("Mojosari", "kabupaten_kota"), ("Kab. Mojokerto", "provinsi"),
    ("jatim", "postal_code"), ("61382", "partner"), ("2", "confirm"),
]  # fmt: skip


def run(texts: list[str | None], start: conv.Conversation | None = None) -> list[conv.Step]:
    state, steps = start or conv.Conversation(), []
    for text in texts:
        step = conv.step(state, text, cod_fee=FEE)
        steps.append(step)
        state = step.conversation
    return steps


def test_a_whole_registration_step_by_step() -> None:
    steps = run([text for text, _ in ANSWERS])
    assert [s.conversation.state for s in steps] == [state for _, state in ANSWERS]
    summary = steps[-1].replies[0]
    assert "3516********0001" in summary and "3516014101900001" not in summary
    assert "Rp 20.000" in summary and "J&T Express" in summary and "KTP-el lama" in summary
    assert "RT/RW 003/005" in summary and "Kabupaten Mojokerto, Jawa Timur 61382" in summary
    final = conv.step(steps[-1].conversation, "ya", cod_fee=FEE)
    assert isinstance(final.action, conv.Register)
    body = RegistrationIn.model_validate(conv.registration_body(final.action.draft, PHONE))
    assert body.document_type == DocumentType.KTP_EL and body.applicant.nik == "3516014101900001"
    assert body.delivery.partner == "jnt" and body.delivery.address.rt_rw == "003/005"


def test_a_wrong_answer_is_explained_and_asked_again_without_repeating_it() -> None:
    at_nik = run(["DAFTAR", "ktp"])[-1].conversation
    step = conv.step(at_nik, "3599014101900001", cod_fee=FEE)
    assert step.conversation == at_nik
    assert "kode wilayah" in step.replies[0] and "3599014101900001" not in step.replies[0]
    assert "Ketik NIK" in step.replies[0]


@pytest.mark.parametrize("text", ["halo", "", "apa ini?", "1"])
def test_anything_else_gets_help(text: str) -> None:
    [step] = run([text])
    assert step.conversation.state == "idle" and "DAFTAR" in step.replies[0]


def test_status_is_answered_anywhere_without_losing_the_place() -> None:
    at_name = run([a for a, _ in ANSWERS[:3]])[-1].conversation
    step = conv.step(at_name, "status ktm 7qx2 94hd", cod_fee=FEE)
    assert step.action == conv.LookupStatus("KTM-7QX2-94HD") and step.conversation == at_name
    assert conv.step(at_name, "STATUS", cod_fee=FEE).replies[0].startswith("Tulis kode")


def test_batal_drops_the_draft() -> None:
    at_street = run([a for a, _ in ANSWERS[:4]])[-1].conversation
    step = conv.step(at_street, "batal", cod_fee=FEE)
    assert step.conversation == conv.Conversation() and "dihapus" in step.replies[0]


def test_a_message_that_is_not_text() -> None:
    at_nik = run(["DAFTAR", "1"])[-1].conversation
    assert "teks" in conv.step(at_nik, None, cod_fee=FEE).replies[0]
    assert "DAFTAR" in conv.step(conv.Conversation(), None, cod_fee=FEE).replies[0]


def test_ulang_starts_again_and_other_answers_repeat_the_question() -> None:
    at_confirm = run([a for a, _ in ANSWERS])[-1].conversation
    assert conv.step(at_confirm, "ULANG", cod_fee=FEE).conversation.state == "document_type"
    again = conv.step(at_confirm, "mungkin", cod_fee=FEE)
    assert again.conversation == at_confirm and "YA" in again.replies[0]


def test_quota_refusal_keeps_the_draft_for_the_day_with_room() -> None:
    at_confirm = run([a for a, _ in ANSWERS])[-1].conversation
    step = conv.refused_quota(at_confirm, "ktp_el", date(2025, 6, 12))
    assert step.conversation == at_confirm and "Kamis, 12 Juni 2025" in step.replies[0]


def test_the_open_request_reply_names_the_code_only_to_its_own_phone() -> None:
    mine = conv.refused_open("ktp_el", "KTM-AAAA-BBBB", "Terdaftar")
    theirs = conv.refused_open("ktp_el", None, "Terdaftar")
    assert "KTM-AAAA-BBBB" in mine.replies[0] and "KTM-" not in theirs.replies[0]


def test_inbound_messages_reads_texts_buttons_and_skips_other_numbers_and_statuses() -> None:
    def value(messages: list[dict[str, object]], phone_id: str = "1") -> dict[str, object]:
        return {"metadata": {"phone_number_id": phone_id}, "messages": messages,
                "statuses": [{"id": "wamid.out", "status": "read"}]}  # fmt: skip

    ts = "1718000000"
    payload = {"entry": [{"changes": [
        {"value": value([{"id": "a", "from": "6281234567890", "timestamp": ts, "type": "text",
                          "text": {"body": "DAFTAR"}},
                         {"id": "b", "from": "6281234567890", "timestamp": ts, "type": "interactive",
                          "interactive": {"button_reply": {"title": "YA"}}},
                         {"id": "c", "from": "6281234567890", "timestamp": ts, "type": "image"}])},
        {"value": value([{"id": "d", "from": "6281234567890", "timestamp": ts, "type": "text",
                          "text": {"body": "x"}}], phone_id="2")},
    ]}]}  # fmt: skip
    found = inbound_messages(payload, "1")
    assert [(m.wamid, m.text) for m in found] == [("a", "DAFTAR"), ("b", "YA"), ("c", None)]
    # what Meta never sends is dropped before it reaches the database
    odd = {"entry": [{"changes": [{"value": value([
        {"id": "e", "from": "62812\x00", "timestamp": ts, "type": "text", "text": {"body": "x"}},
        {"id": "f g", "from": "6281234567890", "timestamp": ts, "type": "text",
         "text": {"body": "x"}}])}]}]}  # fmt: skip
    assert inbound_messages(odd, "1") == []


# ---- capacity -------------------------------------------------------------------------------


def test_quota_of_a_day_override_then_type_then_default() -> None:
    day = date(2025, 3, 31)
    overrides = {day: {"*": 0, "akta_kelahiran": 40}}
    kw = {"default": 250, "per_type": {DocumentType.KTP_EL: 100}, "overrides": overrides}
    assert quota_for(day, DocumentType.AKTA_KELAHIRAN, **kw) == 40  # type: ignore[arg-type]
    assert quota_for(day, DocumentType.KTP_EL, **kw) == 0  # type: ignore[arg-type]
    assert quota_for(date(2025, 4, 1), DocumentType.KTP_EL, **kw) == 100  # type: ignore[arg-type]
    assert quota_for(date(2025, 4, 1), DocumentType.KK, **kw) == 250  # type: ignore[arg-type]


def test_next_day_with_room_skips_full_and_closed_days() -> None:
    today = date(2025, 6, 10)
    quota = {date(2025, 6, d): q for d, q in [(10, 2), (11, 0), (12, 2), (13, 2), (14, 2)]}
    used = {date(2025, 6, 12): 2}
    assert next_day_with_room(today, 4, quota, used) == date(2025, 6, 13)
    assert next_day_with_room(today, 2, quota, used) is None


def test_dates_and_times_in_bahasa() -> None:
    assert format_day(date(2025, 6, 11)) == "Rabu, 11 Juni 2025"
    moment = datetime(2025, 6, 11, 7, 3, tzinfo=UTC)
    assert format_moment(moment, ZoneInfo("Asia/Jakarta")) == "11 Juni 2025 14:03 WIB"


# ---- the tracking page ----------------------------------------------------------------------


def test_the_tracking_page_escapes_everything() -> None:
    view = {
        "document_name": "KTP-el", "tracking_code": "KTM-<b>", "status_label": "Ditolak",
        "partner_name": "J&T Express", "cod_fee_display": "Rp 20.000", "cod_paid": False,
        "requirement_documents": ["<img src=x onerror=alert(1)>"],
        "timeline": [{"occurred_at_local": "1 Juni 2025 10:00 WIB", "label": "Permohonan ditolak",
                      "reason": "<script>alert(1)</script>"}],
    }  # fmt: skip
    page = render_page(view, "<i>salah</i>", '"><script>')
    assert "<script>" not in page and "<img" not in page and "<i>" not in page
    assert "&lt;script&gt;" in page and "J&amp;T Express" in page
