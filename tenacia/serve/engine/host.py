"""Host-memory tuning for the engine process.

glibc's allocator serves blocks above its mmap threshold (128 KiB at start, raised adaptively up to
32 MiB) with fresh ``mmap`` calls and returns freed memory at the top of the heap to the kernel
past its trim threshold. A prefill allocates and frees activations of several megabytes per layer;
each one handed back to the kernel is faulted in again, page by page, on the next use. On the
project's 2-core machine, ``bench/serve_engine.py`` (16 x 100-token prefill of SmolLM2-135M, five
rounds) measured 1.32-1.34 s with freed memory kept and 1.32-1.50 s (median 1.47 s) with
``--no-keep-freed-memory``; earlier ad-hoc runs saw outliers of several seconds with the defaults.
vLLM's CPU backend gets the same effect by preloading tcmalloc.

The engine's memory is bounded anyway (weights, the KV cache allocated once, activations of at
most ``max_batched_tokens`` tokens), so keeping freed blocks costs no more than the peak.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3


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
