"""The pure rules of each service: status view, print job, shipment state machine, messages."""

from __future__ import annotations

import itertools

import pytest

from services.courier.domain import (
    ShipmentState,
    apply_partner_event,
    booking_backoff,
    cod_mismatch,
)
from services.intake.domain import InvalidPhone, apply_event, normalize_phone
from services.notify.templates import TEMPLATES, context, params_for, render
from services.printing.domain import UnsupportedStateTransition, transition
from shared.contracts import topics
from shared.contracts.money import format_rupiah
from shared.privacy import mask_nik, mask_phone, mask_text

# ---- intake: the status the applicant sees -------------------------------------------------

def test_status_moves_forward_whatever_the_order_of_events() -> None:
    lifecycle = [topics.DOCUMENT_PRINTED, topics.HANDED_TO_COURIER, topics.COD_PAID, topics.DELIVERED]
    for order in itertools.permutations(lifecycle):
        status = "registered"
        for event_type in order:
            status = apply_event(status, event_type).status
        assert status == "delivered", order


def test_cod_paid_does_not_change_the_status() -> None:
    change = apply_event("handed_to_courier", topics.COD_PAID)
    assert change == apply_event("handed_to_courier", topics.COD_PAID)
    assert change.status == "handed_to_courier" and not change.changed


def test_events_after_a_rejection_are_noted_not_applied() -> None:
    change = apply_event("rejected", topics.DOCUMENT_PRINTED)
    assert change.status == "rejected" and not change.changed
    assert change.note and "rejected" in change.note


def test_reapplying_the_current_status_is_a_no_op() -> None:
    assert not apply_event("printed", topics.DOCUMENT_PRINTED).changed


@pytest.mark.parametrize(
    ("typed", "normalised"),
    [
        ("081234567890", "+6281234567890"),
        ("0812-3456-7890", "+6281234567890"),
        ("+62 812 3456 7890", "+6281234567890"),
        ("6281234567890", "+6281234567890"),
        ("(0812) 3456.7890", "+6281234567890"),
    ],
)
def test_phone_numbers_in_the_forms_people_type(typed: str, normalised: str) -> None:
    assert normalize_phone(typed) == normalised


@pytest.mark.parametrize("bad", ["", "12345", "+6581234567", "0212345678", "0812abc45678", "08123"])
def test_bad_phone_numbers_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize_phone(bad)
    assert str(info.value)


# ---- printing ------------------------------------------------------------------------------

def test_print_job_transitions() -> None:
    assert transition("queued", "print").state == "printed"
    assert transition("claimed", "print").changed
    assert not transition("printed", "print").changed  # the same mark twice is a no-op
    with pytest.raises(UnsupportedStateTransition):
        transition("rejected", "print")
    with pytest.raises(UnsupportedStateTransition):
        transition("printed", "reject")
    assert transition("claimed", "release").state == "queued"
    assert not transition("queued", "release").changed


# ---- courier: the shipment's state machine -------------------------------------------------

def run(kinds: list[str]) -> tuple[ShipmentState, list[str], list[str]]:
    state, emitted, anomalies = ShipmentState(), [], []
    for kind in kinds:
        decision = apply_partner_event(state, kind)
        state = decision.state
        emitted += decision.emit
        anomalies += [decision.anomaly] if decision.anomaly else []
    return state, emitted, anomalies


@pytest.mark.parametrize("ending", [["cod_collected", "delivered"], ["delivered", "cod_collected"]])
def test_cod_and_delivery_in_either_order_complete_the_shipment(ending: list[str]) -> None:
    state, emitted, anomalies = run(["picked_up", *ending])
    assert state.status == "completed"
    assert sorted(emitted) == sorted([topics.HANDED_TO_COURIER, topics.COD_PAID, topics.DELIVERED])
    assert anomalies == []


def test_duplicate_callbacks_emit_nothing_more() -> None:
    state, emitted, anomalies = run(["picked_up", "picked_up", "in_transit", "delivered",
                                     "delivered", "cod_collected"])
    assert state.status == "completed"
    assert len(emitted) == 3 and anomalies == []


def test_delivery_before_any_pickup_scan_implies_the_handover() -> None:
    state, emitted, anomalies = run(["delivered", "picked_up"])
    assert emitted == [topics.HANDED_TO_COURIER, topics.DELIVERED]
    assert anomalies == ["delivered before any pickup scan"]
    assert state.status == "delivered"


def test_failed_attempts_then_redelivery_or_return() -> None:
    state, emitted, _ = run(["picked_up", "delivery_failed", "delivery_failed", "delivered", "cod_collected"])
    assert state.failed_attempts == 2 and state.status == "completed"
    assert emitted.count(topics.DELIVERY_FAILED) == 2
    state, emitted, _ = run(["picked_up", "delivery_failed", "returned"])
    assert state.status == "returned_to_office"
    assert emitted[-1] == topics.RETURNED_TO_OFFICE


def test_late_facts_are_anomalies_not_crashes() -> None:
    state, _, anomalies = run(["picked_up", "delivered", "cod_collected", "delivery_failed", "returned"])
    assert state.status == "completed"
    assert anomalies == ["delivery failure reported after delivery", "return reported after delivery"]
    _, _, anomalies = run(["picked_up", "returned", "delivered"])
    assert anomalies == ["delivered after the shipment was returned to the office"]


def test_a_return_reported_twice_returns_once() -> None:
    state, emitted, anomalies = run(["picked_up", "returned", "returned"])
    assert emitted.count(topics.RETURNED_TO_OFFICE) == 1 and anomalies == []
    assert state.status == "returned_to_office"


def test_facts_after_a_return_are_anomalies() -> None:
    state, emitted, anomalies = run(["picked_up", "returned", "delivery_failed", "cod_collected"])
    assert emitted == [topics.HANDED_TO_COURIER, topics.RETURNED_TO_OFFICE]
    assert anomalies == ["delivery_failed after the shipment was returned to the office",
                         "cod_collected after the shipment was returned to the office"]
    assert state.failed_attempts == 0


def test_money_reported_twice_or_before_a_return_is_flagged() -> None:
    _, emitted, anomalies = run(["picked_up", "cod_collected", "cod_collected"])
    assert emitted.count(topics.COD_PAID) == 1
    assert anomalies == ["COD reported again after it was collected"]
    state, _, anomalies = run(["picked_up", "cod_collected", "returned"])
    assert state.status == "returned_to_office"
    assert anomalies == ["returned although COD was reported collected"]


def test_cod_amount_other_than_the_fee_is_flagged() -> None:
    assert cod_mismatch(20_000, 20_000) is None
    assert cod_mismatch(20_000, 25_000) == "COD collected Rp 25000 differs from the fee Rp 20000"


def test_booking_backoff_doubles_to_a_cap() -> None:
    assert [booking_backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


# ---- notify and privacy --------------------------------------------------------------------

RECIPIENT = {"name": "Siti", "tracking_code": "KTM-AAAA-BBBB", "document_type": "ktp_el",
             "partner": "jnt", "cod_fee": 20_000, "requirement_documents": ["KTP-el lama (asli)"]}


@pytest.mark.parametrize("event_type", list(TEMPLATES))
def test_every_message_renders_in_bahasa_without_placeholders(event_type: str) -> None:
    data = {"partner": "pos", "waybill": "P123", "cod_amount": 20_000, "amount": 20_000,
            "reason": "alamat tidak ditemukan", "received_by": "Siti"}
    text = render(event_type, params_for(event_type, context(RECIPIENT, data)))
    assert "{" not in text and text


def test_the_handover_message_asks_for_the_fee_and_the_originals() -> None:
    text = render(topics.HANDED_TO_COURIER, params_for(
        topics.HANDED_TO_COURIER, context(RECIPIENT, {"partner": "jnt", "waybill": "JX1", "cod_amount": 20_000})))
    assert "Siapkan Rp 20.000 dan berkas persyaratan asli" in text
    assert "J&T Express" in text


def test_money_is_shown_the_indonesian_way() -> None:
    assert format_rupiah(20_000) == "Rp 20.000"
    assert format_rupiah(1_250_000) == "Rp 1.250.000"
    assert format_rupiah(0) == "Rp 0"


def test_masking_hides_nik_and_phone() -> None:
    assert mask_nik("3516014101900001") == "3516********0001"
    assert mask_phone("+6281234567890") == "+628********90"
    text = mask_text("nik 3516014101900001 phone +6281234567890 or 0812-3456-7890")
    assert "3516014101900001" not in text and "81234567890" not in text and "3456-7890" not in text


@pytest.mark.parametrize(
    "raw",
    ["(+62) 812-3456-7890", "(0812) 3456-7890", "+62 (0)812-3456-7890", "+620812-3456-7890",
     "0062 812 3456 7890", "+62 812-3456-7890", "0812.3456.7890"],
)
def test_masking_hides_every_phone_form_intake_accepts(raw: str) -> None:
    assert normalize_phone(raw) == "+6281234567890"  # intake takes it as a phone...
    masked = mask_text(f"hubungi {raw} ya")
    assert "3456" not in masked and masked.endswith("90 ya")  # ...so no log shows it


@pytest.mark.parametrize("text", ["jadwal ulang 08.12.2026", "08-12-2026", "server 62.81.234.56",
                                  "Rp 1.250.000", "KTN-08123456"])
def test_masking_leaves_dates_and_amounts_alone(text: str) -> None:
    assert mask_text(text) == text
