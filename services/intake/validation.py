"""What an applicant types, checked and normalised (pure; no I/O).

Every message is "Bahasa Indonesia / English" and never repeats the rejected value: the value may
be a NIK or a phone number, and messages end up in answers, WhatsApp replies and logs.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from functools import cache

from stdnum import numdb

# ---- text -------------------------------------------------------------------------------------

# Zero-width and direction marks ride along when a number or address is copied from a WhatsApp
# contact card; they are invisible, so they are dropped rather than refused.
_INVISIBLE = {"Cf"}
_SPACES = re.compile(r"\s+")


class InvalidValue(ValueError):
    """A value a person typed that cannot be used; ``str()`` is the bilingual reason."""


def clean_text(raw: str, error: type[InvalidValue] = InvalidValue) -> str:
    """NFC, invisible marks dropped, runs of whitespace collapsed, no control characters."""
    text = unicodedata.normalize("NFC", raw)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _INVISIBLE)
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in text):
        raise error("berisi karakter kontrol / contains control characters")
    return _SPACES.sub(" ", text).strip()


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


# ---- NIK --------------------------------------------------------------------------------------

# Region codes missing from python-stdnum's list (it predates them): Kalimantan Utara (2012) with
# its regencies, and the Papua provinces of 2022 whose regency codes are not published there.
_EXTRA_REGENCIES: dict[str, frozenset[str]] = {
    "65": frozenset({"01", "02", "03", "04", "71"}),
}
_EXTRA_PROVINCES_ANY_REGENCY = frozenset({"92", "93", "95", "96"})


class InvalidNik(InvalidValue):
    pass


@cache
def _region_db() -> numdb.NumDB:
    return numdb.get("id/loc")


def known_region(code4: str) -> bool:
    """Province + regency/city (first 4 digits) is one the NIK numbering knows."""
    province, regency = code4[:2], code4[2:]
    if province in _EXTRA_PROVINCES_ANY_REGENCY:
        return regency != "00"
    if regency in _EXTRA_REGENCIES.get(province, frozenset()):
        return True
    parts = _region_db().info(code4)
    # stdnum answers [(province, props), (regency, props)]; an unknown part has empty props.
    # (stdnum.id.nik.validate only looks at the province: 3599... passes there, not here.)
    return len(parts) == 2 and all(props for _, props in parts)


def _birth_date_exists(day: int, month: int, yy: int) -> bool:
    for century in (1900, 2000):
        try:
            date(century + yy, month, day)
            return True
        except ValueError:
            continue
    return False


def validate_nik(raw: str) -> str:
    """A NIK of plausible shape (16 digits, known region, real birth date, +40 for women).

    Accepts the spaces, dashes and dots people type (``3516 0141 0190 0001``). The NIK is never
    used to derive facts (domain.md): a corrected birth date or sex does not change it.
    """
    nik = re.sub(r"[\s\-.]", "", clean_text(raw, InvalidNik))
    if not _ascii_digits(nik) or len(nik) != 16:
        raise InvalidNik("NIK harus 16 digit angka / NIK must be 16 digits (0-9)")
    if not known_region(nik[:4]):
        raise InvalidNik(
            "kode wilayah (provinsi/kabupaten) di NIK tidak dikenal"
            " / unknown region code (province/regency) in the NIK"
        )
    if nik[4:6] == "00":
        raise InvalidNik("kode kecamatan di NIK tidak sah / invalid district code in the NIK")
    day, month, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    if not (1 <= day <= 31 or 41 <= day <= 71):
        raise InvalidNik(
            "tanggal lahir di NIK tidak sah (01-31, perempuan 41-71)"
            " / birth day in the NIK must be 01-31 (41-71 for women)"
        )
    if not 1 <= month <= 12:
        raise InvalidNik("bulan lahir di NIK tidak sah / birth month in the NIK must be 01-12")
    if not _birth_date_exists(day - 40 if day > 40 else day, month, yy):
        raise InvalidNik("tanggal lahir di NIK tidak ada / the NIK's birth date does not exist")
    if nik[12:] == "0000":
        raise InvalidNik("nomor urut di NIK tidak sah / the NIK's serial cannot be 0000")
    return nik


# ---- phone ------------------------------------------------------------------------------------

# Indonesian mobile numbers: 08 + operator digit (1 2 3 5 7 8 9) + 7..10 digits = 10..13 digits.
_MOBILE_NSN = re.compile(r"^8[1235789]\d{7,10}$")
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")


class InvalidPhone(InvalidValue):
    pass


def normalize_phone(raw: str) -> str:
    """Any form people type (``0812-3456-789``, ``62812…``, ``+62 812…``, ``0062…``) -> ``+62812…``.

    Only Indonesian mobile numbers: the applicant is reached on WhatsApp.
    """
    text = _PHONE_SEPARATORS.sub("", clean_text(raw, InvalidPhone))
    if text.startswith("+"):
        text = text[1:]
        if not text.startswith("62"):
            raise InvalidPhone("nomor harus nomor Indonesia (+62) / must be an Indonesian number")
    if not _ascii_digits(text):
        raise InvalidPhone("nomor hanya boleh berisi angka / digits only")
    if text.startswith("0062"):
        text = text[2:]
    if text.startswith("62"):
        nsn = text[2:].removeprefix("0")  # "+62 0812..." is a common slip
    elif text.startswith("0"):
        nsn = text[1:]
    else:
        nsn = text
    if not nsn.startswith("8"):
        raise InvalidPhone(
            "nomor ponsel harus diawali 08 atau +628 / mobile numbers start with 08 or +628"
        )
    if not _MOBILE_NSN.match(nsn):
        raise InvalidPhone(
            "bukan nomor ponsel Indonesia yang sah (10-13 digit diawali 08)"
            " / not a valid Indonesian mobile number (10-13 digits starting 08)"
        )
    return "+62" + nsn


# ---- names and address ------------------------------------------------------------------------

_NAME = re.compile(r"^[^\W\d_](?:[^\W\d_]|[ .,'’\-])*$")


def validate_name(raw: str) -> str:
    name = clean_text(raw)
    if len(name) < 2:
        raise InvalidValue("nama terlalu pendek / name too short")
    if len(name) > 100:
        raise InvalidValue("nama maksimal 100 karakter / name at most 100 characters")
    if not _NAME.match(name):
        raise InvalidValue(
            "nama hanya boleh berisi huruf, spasi dan . , ' -"
            " / a name has letters, spaces and . , ' - only"
        )
    return name


def validate_place(raw: str, what: str = "nama tempat / place name", max_len: int = 100) -> str:
    """Kelurahan/desa, kecamatan, street: free text with at least one letter."""
    text = clean_text(raw)
    if len(text) < 2:
        raise InvalidValue(f"{what}: terlalu pendek / too short")
    if len(text) > max_len:
        raise InvalidValue(f"{what}: maksimal {max_len} karakter / at most {max_len} characters")
    if not any(ch.isalpha() for ch in text):
        raise InvalidValue(f"{what}: harus berisi huruf / must contain letters")
    return text


_RT_RW = re.compile(
    r"^(?:RT\.?\s*)?(\d{1,3})\s*(?:[/\-]|\s)\s*(?:RW\.?\s*)?(\d{1,3})$", re.IGNORECASE
)


def normalize_rt_rw(raw: str) -> str:
    """``3/5``, ``03-05``, ``RT 3 RW 5``, ``RT 003/RW 005`` -> ``003/005``."""
    match = _RT_RW.match(clean_text(raw))
    if not match or not all(_ascii_digits(g) for g in match.groups()):
        raise InvalidValue("RT/RW harus seperti 003/005 / RT/RW must look like 003/005")
    rt, rw = (int(g) for g in match.groups())
    if rt == 0 or rw == 0:
        raise InvalidValue("RT dan RW tidak boleh 000 / RT and RW cannot be 000")
    return f"{rt:03d}/{rw:03d}"


def validate_postal_code(raw: str) -> str:
    code = clean_text(raw).replace(" ", "")
    if not (_ascii_digits(code) and len(code) == 5 and code[0] != "0"):
        raise InvalidValue(
            "kode pos harus 5 digit (10110-99999) / postal code must be 5 digits (10110-99999)"
        )
    return code


_KABUPATEN = re.compile(r"^(?:kabupaten|kab\.?)\s+(.+)$", re.IGNORECASE)
_KOTA = re.compile(r"^(?:kota|kot\.?)\s+(.+)$", re.IGNORECASE)


def normalize_kabupaten_kota(raw: str) -> str:
    """``Kab. Mojokerto`` -> ``Kabupaten Mojokerto``; ``kota mojokerto`` -> ``Kota mojokerto``.

    Kabupaten or Kota must be said: Kabupaten Mojokerto and Kota Mojokerto are different offices.
    """
    text = validate_place(raw, "kabupaten/kota")
    if match := _KABUPATEN.match(text):
        return "Kabupaten " + match.group(1)
    if match := _KOTA.match(text):
        return "Kota " + match.group(1)
    raise InvalidValue(
        "sebutkan Kabupaten atau Kota, mis. Kabupaten Mojokerto"
        " / say Kabupaten or Kota, e.g. Kabupaten Mojokerto"
    )


PROVINCES: tuple[str, ...] = (
    "Aceh", "Sumatera Utara", "Sumatera Barat", "Riau", "Jambi", "Sumatera Selatan", "Bengkulu",
    "Lampung", "Kepulauan Bangka Belitung", "Kepulauan Riau", "DKI Jakarta", "Jawa Barat",
    "Jawa Tengah", "DI Yogyakarta", "Jawa Timur", "Banten", "Bali", "Nusa Tenggara Barat",
    "Nusa Tenggara Timur", "Kalimantan Barat", "Kalimantan Tengah", "Kalimantan Selatan",
    "Kalimantan Timur", "Kalimantan Utara", "Sulawesi Utara", "Sulawesi Tengah",
    "Sulawesi Selatan", "Sulawesi Tenggara", "Gorontalo", "Sulawesi Barat", "Maluku",
    "Maluku Utara", "Papua", "Papua Barat", "Papua Selatan", "Papua Tengah", "Papua Pegunungan",
    "Papua Barat Daya",
)  # fmt: skip
_PROVINCE_ALIASES: dict[str, str] = {
    "jakarta": "DKI Jakarta",
    "daerah khusus ibukota jakarta": "DKI Jakarta",
    "daerah khusus jakarta": "DKI Jakarta",
    "yogyakarta": "DI Yogyakarta",
    "diy": "DI Yogyakarta",
    "daerah istimewa yogyakarta": "DI Yogyakarta",
    "bangka belitung": "Kepulauan Bangka Belitung",
    "babel": "Kepulauan Bangka Belitung",
    "kepri": "Kepulauan Riau",
    "ntb": "Nusa Tenggara Barat",
    "ntt": "Nusa Tenggara Timur",
    "sumut": "Sumatera Utara",
    "sumbar": "Sumatera Barat",
    "sumsel": "Sumatera Selatan",
    "jabar": "Jawa Barat",
    "jateng": "Jawa Tengah",
    "jatim": "Jawa Timur",
    "kalbar": "Kalimantan Barat",
    "kalteng": "Kalimantan Tengah",
    "kalsel": "Kalimantan Selatan",
    "kaltim": "Kalimantan Timur",
    "kaltara": "Kalimantan Utara",
    "sulut": "Sulawesi Utara",
    "sulteng": "Sulawesi Tengah",
    "sulsel": "Sulawesi Selatan",
    "sultra": "Sulawesi Tenggara",
    "sulbar": "Sulawesi Barat",
    "malut": "Maluku Utara",
}
_PROVINCE_BY_KEY = {p.casefold(): p for p in PROVINCES} | _PROVINCE_ALIASES


def normalize_province(raw: str) -> str:
    """A province of Indonesia by its name or a common short form -> the official name."""
    key = clean_text(raw).casefold().removeprefix("provinsi ").removeprefix("prov. ").strip()
    key = key.replace("sumatra", "sumatera")
    try:
        return _PROVINCE_BY_KEY[key]
    except KeyError:
        raise InvalidValue(
            "provinsi tidak dikenal, tulis nama lengkap mis. Jawa Timur"
            " / unknown province, write its name, e.g. Jawa Timur"
        ) from None


# ---- tracking codes ---------------------------------------------------------------------------

# Crockford base32 without I, L, O, U: easy to read aloud and type from a WhatsApp message.
TRACKING_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})


def normalize_tracking_code(raw: str) -> str | None:
    """``ktm 7qx2 94hd``, ``KTM7QX294HD``, ``KTM-7QX2-94HO`` -> ``KTM-7QX2-94H0``; None if not one."""
    try:
        text = re.sub(r"[\s\-]", "", clean_text(raw)).upper()
    except InvalidValue:
        return None
    if not text.startswith("KTM"):
        return None
    body = text[3:].translate(_CONFUSABLE)
    if len(body) != 8 or any(ch not in TRACKING_ALPHABET for ch in body):
        return None
    return f"KTM-{body[:4]}-{body[4:]}"


def phone_last_digits(raw: str, count: int = 4) -> str:
    digits = re.sub(r"[\s\-]", "", clean_text(raw))
    if not (_ascii_digits(digits) and len(digits) == count):
        raise InvalidValue(
            f"isi {count} digit terakhir nomor WhatsApp / give the last {count} digits of the phone"
        )
    return digits
