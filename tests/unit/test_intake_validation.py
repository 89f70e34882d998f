"""Property-based tests of what applicants type: NIK, phone numbers, and the other fields."""

from __future__ import annotations

import random
import re
from datetime import date

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from stdnum.id import nik as stdnum_nik

from deploy.local.demo import sample_nik, sample_phone
from services.intake.validation import (
    InvalidNik,
    InvalidPhone,
    InvalidValue,
    clean_text,
    known_region,
    normalize_kabupaten_kota,
    normalize_phone,
    normalize_province,
    normalize_rt_rw,
    normalize_tracking_code,
    validate_name,
    validate_nik,
    validate_postal_code,
)
from shared.privacy import mask_text

# ---- NIK --------------------------------------------------------------------------------------


def _regions() -> list[str]:
    return [f"{p:02d}{r:02d}" for p in range(11, 100) for r in range(1, 100)
            if known_region(f"{p:02d}{r:02d}")]  # fmt: skip


REGIONS = _regions()


@st.composite
def niks(draw: st.DrawFn, woman: bool | None = None) -> str:
    region = draw(st.sampled_from(REGIONS))
    district = draw(st.integers(1, 99))
    born = draw(st.dates(date(1920, 1, 1), date(2024, 12, 31)))
    is_woman = draw(st.booleans()) if woman is None else woman
    day = born.day + (40 if is_woman else 0)
    serial = draw(st.integers(1, 9999))
    return f"{region}{district:02d}{day:02d}{born.month:02d}{born.year % 100:02d}{serial:04d}"


def test_the_region_table_knows_every_province_and_mojokerto() -> None:
    assert len(REGIONS) > 450
    assert {"3516", "3576", "3171", "9471", "6501"} <= set(REGIONS)  # Kab./Kota Mojokerto...
    assert not known_region("3599") and not known_region("9916") and not known_region("3500")


@given(niks())
@example("3516014101900001")  # README's example
def test_a_plausible_nik_is_accepted_as_is(nik: str) -> None:
    assert validate_nik(nik) == nik
    # stricter than stdnum, except the provinces stdnum's table predates (Kaltara, new Papua)
    assert stdnum_nik.is_valid(nik) or nik[:2] in {"65", "92", "93", "95", "96"}


@given(niks(), st.lists(st.sampled_from([" ", "-", "."]), min_size=15, max_size=15))
def test_separators_people_type_are_ignored(nik: str, seps: list[str]) -> None:
    spaced = "".join(d + s for d, s in zip(nik, [*seps, ""], strict=True))
    assert validate_nik(f"  {spaced} ") == nik


@given(niks(woman=False))
def test_the_plus_40_rule_for_women(nik: str) -> None:
    woman = nik[:6] + f"{int(nik[6:8]) + 40:02d}" + nik[8:]
    assert validate_nik(nik) == nik and validate_nik(woman) == woman


@given(niks(), st.sampled_from([0, *range(32, 41), *range(72, 100)]))
def test_a_birth_day_outside_01_31_and_41_71_is_refused(nik: str, day: int) -> None:
    with pytest.raises(InvalidNik, match="tanggal lahir"):
        validate_nik(nik[:6] + f"{day:02d}" + nik[8:])


@given(niks(), st.sampled_from([0, 13, 20, 99]))
def test_a_month_outside_01_12_is_refused(nik: str, month: int) -> None:
    with pytest.raises(InvalidNik, match="bulan"):
        validate_nik(nik[:8] + f"{month:02d}" + nik[10:])


@pytest.mark.parametrize("nik", ["3516013002900001", "3516017002900001", "3516013104900001",
                                 "3516012902010001"])  # fmt: skip
def test_a_birth_date_that_does_not_exist_is_refused(nik: str) -> None:
    with pytest.raises(InvalidNik, match="tidak ada"):
        validate_nik(nik)


def test_29_february_of_a_leap_year_is_a_birthday() -> None:
    assert validate_nik("3516012902000001") and validate_nik("3516016902840001")


@given(niks())
def test_district_00_and_serial_0000_are_refused(nik: str) -> None:
    with pytest.raises(InvalidNik, match="kecamatan"):
        validate_nik(nik[:4] + "00" + nik[6:])
    with pytest.raises(InvalidNik, match="urut"):
        validate_nik(nik[:12] + "0000")


@given(st.text(alphabet="0123456789", min_size=0, max_size=30).filter(lambda s: len(s) != 16))
def test_any_other_length_is_refused(digits: str) -> None:
    with pytest.raises(InvalidNik, match="16 digit"):
        validate_nik(digits)


@given(niks(), st.sampled_from(["٣", "３", "a", "O", "/", "_"]), st.integers(0, 15))
def test_non_ascii_digits_and_letters_are_refused(nik: str, bad: str, at: int) -> None:
    with pytest.raises(InvalidNik):
        validate_nik(nik[:at] + bad + nik[at + 1 :])


@given(st.text(max_size=40))
@settings(max_examples=300)
def test_any_text_is_a_nik_or_a_reason_that_does_not_repeat_it(text: str) -> None:
    try:
        nik = validate_nik(text)
    except InvalidNik as exc:
        digits = re.sub(r"\D", "", text)
        assert len(digits) < 6 or digits not in str(exc)
    else:
        assert re.fullmatch(r"[0-9]{16}", nik)


def test_the_demo_niks_are_plausible() -> None:
    rng = random.Random(7)
    for _ in range(500):
        nik = sample_nik(rng)
        assert validate_nik(nik) == nik


# ---- phone numbers --------------------------------------------------------------------------

nsns = st.builds(
    lambda op, rest: f"8{op}{rest}",
    st.sampled_from("1235789"),
    st.text(alphabet="0123456789", min_size=7, max_size=10),
)


def _grouped(digits: str, sep: str, rng: random.Random) -> str:
    out, i = [], 0
    while i < len(digits):
        n = rng.randint(2, 4)
        out.append(digits[i : i + n])
        i += n
    return sep.join(out)


@given(nsns, st.sampled_from([" ", "-", ".", ""]), st.randoms(use_true_random=False))
def test_every_form_people_type_gives_the_same_plus_62_number(
    nsn: str, sep: str, rng: random.Random
) -> None:
    expected = "+62" + nsn
    forms = [
        "0" + nsn, "62" + nsn, "+62" + nsn, "0062" + nsn, nsn,
        "+62 " + _grouped(nsn, sep, rng), "0" + _grouped(nsn, sep, rng),
        f"(0{nsn[:3]}) {nsn[3:]}", "+62 (0)" + nsn, "+62 0" + nsn,
        "\u202a+62 " + _grouped(nsn, " ", rng) + "\u202c",  # copied from a WhatsApp contact
        f"  0{nsn}\u200b ",
    ]  # fmt: skip
    for form in forms:
        assert normalize_phone(form) == expected, form


@given(nsns)
def test_normalising_twice_changes_nothing(nsn: str) -> None:
    once = normalize_phone("0" + nsn)
    assert normalize_phone(once) == once


@given(st.text(max_size=30))
@settings(max_examples=300)
@example("+1 415 555 0100")
@example("021-5550100")
@example("0812")
@example("08123456789012345")
@example("٠٨١٢٣٤٥٦٧٨٩٠")
def test_any_text_is_an_indonesian_mobile_number_or_refused(text: str) -> None:
    try:
        phone = normalize_phone(text)
    except InvalidPhone:
        return
    assert re.fullmatch(r"\+628[1235789][0-9]{7,10}", phone)


@pytest.mark.parametrize(
    "raw",
    ["+1 415 555 0100", "+6221 5550100", "021-5550100", "0800-1234567", "0812-345", "0812 3456 7890 123",
     "0812a4567890", "٠٨١٢٣٤٥٦٧٨٩٠", "０８１２３４５６７８９０", "", "   ", "+", "62", "+62 812-3456-7890 ext 2"],
)  # fmt: skip
def test_what_is_not_an_indonesian_mobile_number(raw: str) -> None:
    with pytest.raises(InvalidPhone):
        normalize_phone(raw)


@given(nsns, st.sampled_from(["+62{}", "62{}", "0{}"]))
def test_a_logged_phone_number_is_masked(nsn: str, form: str) -> None:
    line = f"sent to {form.format(nsn)} ok"
    assert nsn not in mask_text(line)


@given(niks())
def test_a_logged_nik_is_masked(nik: str) -> None:
    assert nik not in mask_text(f"nik={nik}, again:{nik}.")


def test_the_demo_phone_numbers_are_valid() -> None:
    rng = random.Random(3)
    for _ in range(200):
        normalize_phone(sample_phone(rng))


# ---- the other fields -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("003/005", "003/005"), ("3/5", "003/005"), ("03-05", "003/005"), ("RT 3 RW 5", "003/005"),
     ("rt.003 / rw.005", "003/005"), ("RT 12/RW 7", "012/007")],
)  # fmt: skip
def test_rt_rw_forms(raw: str, expected: str) -> None:
    assert normalize_rt_rw(raw) == expected


@pytest.mark.parametrize("raw", ["000/005", "3", "abc", "1234/5", "3/5/7", "٣/٥"])
def test_rt_rw_refused(raw: str) -> None:
    with pytest.raises(InvalidValue):
        normalize_rt_rw(raw)


@pytest.mark.parametrize("raw", ["6138", "613820", "01234", "6l382", "６１３８２"])
def test_postal_code_refused(raw: str) -> None:
    with pytest.raises(InvalidValue):
        validate_postal_code(raw)


def test_kabupaten_or_kota_must_be_said() -> None:
    assert normalize_kabupaten_kota("Kab. Mojokerto") == "Kabupaten Mojokerto"
    assert normalize_kabupaten_kota("kota Mojokerto") == "Kota Mojokerto"
    with pytest.raises(InvalidValue, match="Kabupaten atau Kota"):
        normalize_kabupaten_kota("Mojokerto")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Jawa Timur", "Jawa Timur"), ("jatim", "Jawa Timur"), ("Provinsi Jawa Timur", "Jawa Timur"),
     ("DKI Jakarta", "DKI Jakarta"), ("daerah istimewa yogyakarta", "DI Yogyakarta"),
     ("Sumatra Utara", "Sumatera Utara"), ("Papua Pegunungan", "Papua Pegunungan")],
)  # fmt: skip
def test_provinces(raw: str, expected: str) -> None:
    assert normalize_province(raw) == expected


def test_an_unknown_province_is_refused() -> None:
    with pytest.raises(InvalidValue, match="provinsi"):
        normalize_province("Jawa Utara")


@pytest.mark.parametrize("name", ["Siti Aminah", "I Gede Ngurah", "Muh. Ali", "Ni Luh Putu-Ayu",
                                  "Andi Ma'ruf", "Dr. Budi, S.H."])  # fmt: skip
def test_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "Budi 2", "3516014101900001", "<script>", "Budi\x00",
                                  "x" * 101, "😀 Budi"])  # fmt: skip
def test_names_refused(name: str) -> None:
    with pytest.raises(InvalidValue):
        validate_name(name)


def test_clean_text_drops_invisible_marks_and_refuses_control_characters() -> None:
    assert clean_text("\u202a Siti \u200b  Aminah\u202c ") == "Siti Aminah"
    with pytest.raises(InvalidValue, match="kontrol"):
        clean_text("Jl. Raya\x00 12")


@given(st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=8, max_size=8))
def test_tracking_codes_survive_how_people_retype_them(body: str) -> None:
    code = f"KTM-{body[:4]}-{body[4:]}"
    assert normalize_tracking_code(code) == code
    assert normalize_tracking_code(code.lower().replace("-", " ")) == code
    assert normalize_tracking_code("KTM" + body) == code
    # O read for 0, I or L for 1
    zero_one = f"KTM-0{body[1:4]}-1{body[5:]}"
    assert normalize_tracking_code(zero_one.replace("0", "O").replace("1", "l")) == zero_one


@pytest.mark.parametrize("raw", ["", "KTM", "KTM-1234-567", "XYZ-1234-5678", "KTM-1234-567U"])
def test_not_tracking_codes(raw: str) -> None:
    assert normalize_tracking_code(raw) is None
