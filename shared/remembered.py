"""A bounded, in-process memory of rows this process last wrote: hints that save a read.

Courier's partner callbacks (``services/courier/known_shipments.py``) and printing's operator
actions (``services/printing/claimed_jobs.py``) each read a row, decide in Python, and store the
decision only if the row is still as read (a compare-and-set). When this process wrote that row
itself a moment before, it can decide on what it wrote and skip the read. A remembered row is only
ever a hint: the compare-and-set checks it against the database exactly as it checks a read, and
the caller reads again whenever the hint did not lead to a write. So an entry may be stale, lost or
dropped without harm, and the memory is bounded: the latest ``max_entries`` keys, the least
recently written dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Remembered(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._rows: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._rows.get(key)

    def pop(self, key: K) -> V | None:
        """The entry, forgotten: for a hint that is used once."""
        return self._rows.pop(key, None)

    def put(self, key: K, value: V) -> None:
        self._rows[key] = value
        self._rows.move_to_end(key)
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)

    def forget(self, key: K) -> None:
        self._rows.pop(key, None)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows
