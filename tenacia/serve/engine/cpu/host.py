"""Host-memory tuning for the engine process.

glibc's allocator serves blocks above its mmap threshold (128 KiB at start, raised adaptively up to
32 MiB) with fresh ``mmap`` calls and returns freed memory at the top of the heap to the kernel
past its trim threshold. A prefill allocates and frees activations of several megabytes per layer;
each one handed back to the kernel is faulted in again, page by page, on the next use. Keeping
freed memory makes a prefill faster and steadier (``bench/serve_engine.py`` against
``--no-keep-freed-memory``; measured in docs/serving.md, "Speed").
vLLM's CPU backend gets the same effect by preloading tcmalloc.

The engine's memory is bounded anyway (weights, the KV cache allocated once, activations of at
most ``max_batched_tokens`` tokens), so keeping freed blocks costs no more than the peak.

Huge pages: a decode step streams every weight from memory once (540 MB for SmolLM2-135M in
float32), and with 4 KiB pages that is ~130,000 TLB misses a step. torch's CPU allocator puts
allocations of 2 MiB or more on transparent huge pages when ``THP_MEM_ALLOC_ENABLE=1`` is in the
environment before its first allocation, so it must be set before the engine process starts
(``HUGE_PAGES_ENV``; the kernel must allow THP: ``madvise`` or ``always`` in
/sys/kernel/mm/transparent_hugepage/enabled, else it is a no-op). Fewer TLB misses make the
decode step shorter (``bench/serve_engine.py`` against ``--no-huge-pages``; measured in
docs/serving.md, "Speed", and for the projections alone in "Recorded observations").
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3


HUGE_PAGES_ENV = {"THP_MEM_ALLOC_ENABLE": "1"}


def huge_pages_in_use() -> int:
    """Bytes of this process's anonymous memory on transparent huge pages (0 if unknown)."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (no-op elsewhere). Returns whether it took."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS, Windows): nothing to tune
    ok = bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 31))
    if not ok:
        log.debug("mallopt refused the thresholds; using glibc's defaults")
    return ok
