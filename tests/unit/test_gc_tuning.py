"""shared.gc_tuning: what a service does to the garbage collector once it has started."""

import gc

from shared.gc_tuning import GC_YOUNG_THRESHOLD, settle_gc


def test_settle_gc_freezes_startup_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_freeze_count() > 1000  # this test process's imports, at least
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        # a cycle made afterwards is still collected: the collector runs, just less often
        class Node:
            other: object = None

        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
