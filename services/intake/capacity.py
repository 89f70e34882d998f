"""Daily capacity per document type (pure): how many a day takes, and the next day with room.

Offices capped online requests per day (Mojokerto: about 250). The quota of a day is the override
for that date if there is one (closure day, Lebaran), else the type's quota, else the default.
Requests registered by an operator at the counter are counted but never refused: the person is
standing there. Days are the office's calendar days (``OFFICE_TIMEZONE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.contracts.events import DocumentType

# Bahasa Indonesia names for dates in messages (no locale needed on the server).
_DAYS = ("Senin", "Selasa", "Rabu", "Kamis", "Jumat", "Sabtu", "Minggu")
_MONTHS = (
    "Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus", "September",
    "Oktober", "November", "Desember",
)  # fmt: skip


def office_today(now: datetime, zone: ZoneInfo) -> date:
    return now.astimezone(zone).date()


def quota_for(
    day: date,
    document_type: DocumentType,
    *,
    default: int,
    per_type: Mapping[DocumentType, int],
    overrides: Mapping[date, Mapping[str, int]],
) -> int:
    override = overrides.get(day)
    if override is not None:
        if document_type.value in override:
            return override[document_type.value]
        if "*" in override:
            return override["*"]
    return per_type.get(document_type, default)


def next_day_with_room(
    after: date,
    horizon_days: int,
    quota_of: Mapping[date, int],
    used: Mapping[date, int],
) -> date | None:
    """The first day after ``after`` whose quota is not used up, within the horizon."""
    for offset in range(1, horizon_days + 1):
        day = after + timedelta(days=offset)
        if used.get(day, 0) < quota_of[day]:
            return day
    return None


def format_day(day: date) -> str:
    """``Rabu, 11 Juni 2025``."""
    return f"{_DAYS[day.weekday()]}, {day.day} {_MONTHS[day.month - 1]} {day.year}"


def format_moment(moment: datetime, zone: ZoneInfo) -> str:
    """``11 Juni 2025 14:03 WIB`` (the zone's abbreviation: WIB, WITA, WIT)."""
    local = moment.astimezone(zone)
    return f"{local.day} {_MONTHS[local.month - 1]} {local.year} {local:%H:%M} {local.tzname()}"


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
