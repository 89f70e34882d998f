"""What this process last wrote of recently booked shipments: a partner callback's read, skipped.

A callback is applied by reading its shipment, deciding in Python and storing the decision only if
the shipment is still as read (``webhooks.py``: a compare-and-set on every column the decision
uses). The read is one statement of the two, on every callback: three a lifecycle. But this
process wrote those columns itself, at the booking and at the callback before: it keeps what it
wrote, and the next callback of that parcel decides on it and goes straight to the store.

Nothing can go wrong by a stale entry: the store compares it with the database, as it compares
the read. Another instance, an ops action or a duplicate callback makes the store write nothing,
and the callback is then read and decided again as before (the entry is dropped). So the entries
are hints (``shared.remembered``), kept for the latest ``MAX_ENTRIES`` waybills (~300 bytes each:
a tuple of the values), and lost with the process without harm.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.remembered import Remembered

if TYPE_CHECKING:
    from shared.runtime import Runtime

# ~3 MiB; in the benchmark a parcel's callbacks come seconds after its booking, in production hours
# to days later: weeks of one regency's bookings, minutes of a national peak (then reads again)
MAX_ENTRIES = 10_000

# the columns of webhooks._READ, without its `seen`: a callback from the cache is taken as unseen,
# and the store refuses it (writes nothing) if it was seen
COLUMNS = ("request_id", "correlation_id", "status", "handed", "cod_paid", "delivered",
           "returned", "failed_attempts", "cod_fee", "has_originals")  # fmt: skip


class KnownShipments:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._rows: Remembered[tuple[str, str], tuple[Any, ...]] = Remembered(max_entries)

    def get(self, partner: str, waybill: str) -> dict[str, Any] | None:
        """The shipment as last written here, in the shape of webhooks._READ's row (``seen``
        False), or None."""
        values = self._rows.get((partner, waybill))
        if values is None:
            return None
        return {**dict(zip(COLUMNS, values, strict=True)), "seen": False}

    def remember(self, partner: str, waybill: str, row: Mapping[str, Any]) -> None:
        self._rows.put((partner, waybill), tuple(row[c] for c in COLUMNS))

    def remember_booked(self, partner: str, waybill: str, row: Mapping[str, Any]) -> None:
        """The shipment ``row`` (all its columns, as claimed for booking) just stored as booked."""
        self.remember(partner, waybill, {
            **row, "status": "booked", "has_originals": has_originals(row["requirement_documents"]),
        })  # fmt: skip

    def forget(self, partner: str, waybill: str) -> None:
        self._rows.forget((partner, waybill))

    def __len__(self) -> int:
        return len(self._rows)


def has_originals(requirement_documents: Any) -> bool | None:
    """``requirement_documents <> '[]'::jsonb`` of webhooks._READ, from the column as asyncpg
    gives it (jsonb as text; decoded, should a codec ever be set)."""
    if requirement_documents is None:
        return None
    if isinstance(requirement_documents, str | bytes):
        requirement_documents = json.loads(requirement_documents)
    return requirement_documents != []


def known_shipments(rt: Runtime) -> KnownShipments:
    known = rt.extras.get("known_shipments")
    if known is None:  # not setdefault: that would build a memory at every call
        known = rt.extras["known_shipments"] = KnownShipments()
    return known  # type: ignore[no-any-return]
