"""``heap.freeze_start_objects``: what is alive at the call is out of every later collection, and
garbage made afterwards is still collected."""

from __future__ import annotations

import gc
import weakref

from tenacia.serve.heap import freeze_start_objects


class Node:
    def __init__(self):
        self.other = self


def test_objects_alive_at_the_call_are_frozen_and_later_cycles_are_still_collected():
    kept = [Node() for _ in range(100)]
    try:
        freeze_start_objects()
        assert gc.get_freeze_count() >= len(kept)
        later = Node()  # a cycle made after the freeze, then dropped
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
