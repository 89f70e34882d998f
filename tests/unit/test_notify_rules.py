"""Notify's rules: who is told, free text or template, retries, WhatsApp statuses in any order."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.notify.domain import (
    advance_wa_status,
    callback_ref,
    message_kind,
    parse_callback_ref,
    recipients_for,
    retry_delay,
)
from services.notify.settings import NotifySettings
from services.notify.templates import TEMPLATES, clean_param, context, params_for, render
from shared.contracts import topics

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
MARGIN = timedelta(minutes=10)


def test_template_outside_the_window_free_text_inside() -> None:
    assert message_kind(None, NOW, MARGIN, False) == "template"  # never wrote to us
    assert message_kind(NOW - timedelta(hours=2), NOW, MARGIN, False) == "text"
    assert message_kind(NOW - timedelta(hours=23, minutes=55), NOW, MARGIN, False) == "template"
    assert message_kind(NOW - timedelta(hours=25), NOW, MARGIN, False) == "template"
    # free text refused by WhatsApp once: the template, whatever the window says
    assert message_kind(NOW - timedelta(minutes=1), NOW, MARGIN, True) == "template"


@pytest.mark.parametrize("order", list(itertools.permutations(["sent", "delivered", "read"])))
def test_statuses_in_any_order_end_at_read(order: tuple[str, ...]) -> None:
    state: str | None = None
    for status in [*order, *order]:  # and every one repeated
        state = advance_wa_status(state, status)
    assert state == "read"


def test_a_status_never_moves_backwards() -> None:
    assert advance_wa_status("read", "delivered") == "read"
    assert advance_wa_status("delivered", "sent") == "delivered"
    assert advance_wa_status("sent", "failed") == "failed"
    assert advance_wa_status("failed", "sent") == "failed"
    # delivered or read is proof the phone got it, whatever a stray failure says
    assert advance_wa_status("delivered", "failed") == "delivered"
    assert advance_wa_status("failed", "read") == "read"


def test_backoff_doubles_to_a_cap() -> None:
    assert [retry_delay(a, 1.0, 300.0) for a in (1, 2, 3, 9, 10, 20)] == [1, 2, 4, 256, 300, 300]


def test_the_person_at_the_door_is_told_about_the_door_only() -> None:
    assert recipients_for(topics.HANDED_TO_COURIER, True) == ("applicant", "delivery")
    assert recipients_for(topics.DELIVERY_FAILED, True) == ("applicant", "delivery")
    assert recipients_for(topics.COD_PAID, True) == ("applicant",)
    assert recipients_for(topics.HANDED_TO_COURIER, False) == ("applicant",)


def test_callback_reference_round_trip() -> None:
    event_id = uuid.uuid4()
    assert parse_callback_ref(callback_ref(event_id, "delivery")) == (event_id, "delivery")
    for other in (None, "", "intake-reply-42", f"{event_id}/someone", "not-a-uuid/applicant"):
        assert parse_callback_ref(other) is None


def test_template_parameters_are_what_meta_accepts_and_never_a_nik() -> None:
    assert clean_param("Jl. Raya\nJabon\t No.  1") == "Jl. Raya Jabon No. 1"
    assert clean_param("     ") == "-"
    assert clean_param("NIK 3516014101900001 tidak cocok") == "NIK 3516********0001 tidak cocok"


def test_a_rejection_reason_reaches_the_applicant_clean() -> None:
    recipient = {"name": "Siti", "tracking_code": "KTM-AAAA-BBBB", "document_type": "kk",
                 "partner": "pos", "cod_fee": 20_000, "requirement_documents": []}
    params = params_for(topics.REQUEST_REJECTED,
                        context(recipient, {"reason": "foto buram,\n\nmohon unggah ulang"}))
    text = render(topics.REQUEST_REJECTED, params)
    assert "foto buram, mohon unggah ulang" in text and "\n" not in text
    assert "Kartu Keluarga" in text and "KTM-AAAA-BBBB" in text


def test_every_event_has_one_approved_template_name() -> None:
    assert set(TEMPLATES) == set(topics.EVENT_TOPICS)
    assert len({t.name for t in TEMPLATES.values()}) == len(TEMPLATES)


def test_a_claim_must_outlast_a_send() -> None:
    with pytest.raises(ValueError, match="SEND_CLAIM_S"):
        NotifySettings(send_claim_s=5, whatsapp_timeout_s=10)


def test_parameters_are_filled_in_one_pass() -> None:
    """A parameter's own text is never read as a placeholder (it was: "{2}" in the first one
    became the second parameter)."""
    text = render(topics.REQUEST_REJECTED, ["Siti {2} {4}", "Kartu Keluarga", "KTM-1", "foto {1}"])
    assert text == ("Mohon maaf Siti {2} {4}, permohonan Kartu Keluarga (kode KTM-1)"
                    " belum dapat diproses: foto {1}.")
