"""Tests choose by capability, never by the machine they happen to run on.

One marker per instruction set (``@pytest.mark.avx512``, ``avx2``, ``neon``): a test that needs a
kernel this CPU lacks is skipped with the reason, naming what the CPU has. ``needs_cc`` marks a
test that needs a C compiler; in CI (``CI=true``, where ``.ci/run`` installs gcc) a missing one
fails the test instead, so that a build failure on a CPU that supports the kernel is never
hidden as a skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tenacia.device import cpu_features

# marker -> the /proc/cpuinfo flag it needs
ISA_MARKERS = {"avx512": "avx512f", "avx2": "avx2", "neon": "neon"}
HAS_CC = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))
needs_cc = pytest.mark.skipif(not HAS_CC and os.environ.get("CI") != "true",
                              reason="needs a C compiler (set CC or install gcc)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    have = cpu_features()
    for marker, flag in ISA_MARKERS.items():
        if item.get_closest_marker(marker) is not None and flag not in have:
            isa = sorted(f for f in have if f.startswith(("avx", "fma", "sse4", "asimd", "sve", "neon")))
            pytest.skip(f"needs a CPU with {marker.upper()} ({flag}); this one has: {', '.join(isa) or 'none of those'}")
