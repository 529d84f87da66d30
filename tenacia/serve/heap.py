"""What a server process built at its start, left out of Python's garbage collection.

Why: each process of the server holds a few hundred thousand objects from its start (torch's
modules, the tokenizer, FastAPI's routes, the engine's tables) that live as long as it does.
CPython walks all of them in every collection of its oldest generation, which the allocations
of serving set off from time to time: 70-90 ms in the engine process (a decode step or a prefill
stalled) and ~100 ms in the HTTP process (every stream stalled), measured with
``bench/ttft_parts.py``'s collection notes (docs/benchmarks.md, issue 12, "A prefill's rows dealt
to the threads that wrote them; the start's objects out of the collector").
``gc.freeze()`` moves every object alive at that moment into a permanent generation that no
collection walks; objects made later are collected as before. A cycle among the frozen objects
is never freed: they are the process's start-up state, kept anyway.
"""

from __future__ import annotations

import gc


def freeze_start_objects() -> None:
    """Collect what the start left as garbage, then leave every object alive now out of later
    collections. Call once, when the process has finished starting and before it serves."""
    gc.collect()
    gc.freeze()
