"""Python's cyclic garbage collector, tuned for a long-running server process."""

from __future__ import annotations

import gc

# Decision (bench/README.md, "Fourth round"):
# - the objects that importing FastAPI, pydantic, asyncpg, aiokafka... and starting the service
#   created live as long as the process, yet every full collection walked them all again: frozen
#   once started (``gc.freeze``), they are never scanned;
# - a young collection every 10,000 net allocations instead of 700: a request's objects mostly die
#   by reference counting before one runs, so fewer are promoted and scanned again later.
# Measured with perf at 40/s: the collector took ~3% of the machine's CPU before.
GC_YOUNG_THRESHOLD = 10_000


def settle_gc() -> None:
    """Freeze what exists now (startup's objects) and collect young objects less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
