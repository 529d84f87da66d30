"""The matrix products of the serving layout, and which implementation runs each, chosen by timing
them on this CPU once at the engine's start.

A ``PackedLinear`` holds one projection's weight in the layouts it can run in:
- ``mkl``: the plain weight, ``F.linear`` (MKL's float32 GEMM on x86 CPUs);
- ``mkl-packed``: MKL's packed layout (``torch.ops.mkl._mkl_reorder_linear_weight``), where MKL
  has packing;
- ``onednn``: oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, the layout
  torch's own compiler uses for CPU linears), where torch is built with oneDNN;
- ``kernel``: the 16-column panels of the engine's decode kernels (``kernels.SmallLinear``), for
  at most ``kernels.MAX_ROWS`` rows;
- ``kernel-rows``: the same panels with a prefill's rows dealt among the threads rather than the
  panels (``SmallLinear.rows_split``); never timed here, only set for every product at once by
  ``prefill_path`` (whole prefills timed at start).
Each layout checks itself against ``F.linear`` when it is built and is dropped if it disagrees.

Which one runs is decided three times, for a decode step (``MAX_ROWS`` rows or fewer), a short
prefill (up to ``LONG_FROM`` rows) and a long one (more), by ``ProductChooser``: it times the
candidates on the first weight of each shape, in turns, and keeps the one of least median time
(plain MKL only races where MKL cannot pack); the later layers of the same shape take the same
choice untimed. A prefill's products are timed at ``PREFILL_ROWS`` rows and a long prefill's at
``LONG_PREFILL_ROWS``, on a weight in cache (a prompt reuses each weight for every row): the two
differ (on the 2-core Zen 4 guest the kernels' panels were the fastest or level at 128 rows and
the slowest from 512 rows on, whose transposed input no longer fits a core's L2 cache: a burst of
16 x 100 tokens took 12% longer with them than with oneDNN's; docs/benchmarks.md, 2026-12-05). Where the engine's decode
kernels run, a decode's products take their panels here, and the way a whole decode step runs
(the kernels' one call, the layers one by one, or the layers with the prefill's products) is
timed at start on whole steps (``decode_path.py``). Without the kernels a decode product is
timed as a decode step runs it, on a weight just pushed out of the caches (``evict``: a decode
step's weights are far larger than the caches), at 1 row and at ``MAX_ROWS`` rows, the two
times added. A layout no regime chose is dropped. Without a chooser (accelerators, tests), the
defaults are the kernel for a decode and MKL's packed layout (else plain) for a prefill. Every
implementation is the same float32 product in another summation order (within ~1e-6 relative
of each other).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor

from . import kernels as dk

log = logging.getLogger(__name__)

# The row count MKL is told when packing. Any count may be used afterwards, but the layout it
# picks depends on it: for SmolLM2's 30 layers, packing for 128 rows made both a 100-token prompt
# and 16 decode rows faster than packing for 16, packing for 1,600 made both slower, and 64 to
# 256 were about level (measured in docs/serving.md, "Recorded observations").
PACK_ROWS = 128
PREFILL_ROWS = 128  # the prefill a choice is timed at
LONG_PREFILL_ROWS = 512  # the long prefill a choice is timed at
LONG_FROM = 256  # a prefill of more rows than this runs the long prefill's choice
CHECK_ROWS = (1, 3, 16, 37)
IMPLS = ("kernel", "mkl-packed", "onednn", "mkl")


def _mkl_usable(weight: Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch._C.has_mkl
            and hasattr(torch.ops.mkl, "_mkl_linear"))


class PackedLinear:
    """``y = x @ weight.T + bias`` for ``x`` of shape (..., in). ``bias`` (out,) or None; every
    implementation adds it inside the product's own call. ``kernels``: also build the decode
    kernels' panels; ``chooser``: time the implementations (module docstring); ``runs_in``:
    "both", or "decode" / "prefill" for a product that runs in one regime only (the other takes
    the same choice, untimed)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, *, kernels: dk.Kernels | None = None,
                 chooser: ProductChooser | None = None, runs_in: str = "both"):
        weight = weight.detach().contiguous()
        self.out_features, self.in_features = weight.shape
        self.bias = bias.detach().contiguous() if bias is not None else None
        self.weight: Tensor | None = weight
        self.small = small_linear(kernels, weight, bias)
        self.packed: Tensor | None = self._pack(weight)
        self.onednn: Tensor | None = self._onednn(weight) if chooser is not None else None
        # plain MKL only where MKL cannot pack: its packed layout runs the same GEMM, faster
        layouts = (self.small, self.packed, self.onednn, weight if self.packed is None else None)
        available = [name for name, layout in zip(IMPLS, layouts, strict=True) if layout is not None]
        if chooser is not None:
            self.decode_impl, self.prefill_impl, self.long_impl = chooser.choose(
                self, available, runs_in, decode="kernel" if self.small is not None else None)
        else:
            self.decode_impl = available[0]
            self.prefill_impl = self.long_impl = "mkl-packed" if self.packed is not None else "mkl"
        self.drop_unused()

    def drop_unused(self) -> None:
        """Free the layouts that none of ``decode_impl``, ``prefill_impl``, ``long_impl`` names."""
        used = {self.decode_impl, self.prefill_impl, self.long_impl}
        if not used & {"kernel", "kernel-rows"}:
            self.small = None
        if "mkl-packed" not in used:
            self.packed = None
        if "onednn" not in used:
            self.onednn = None
        if "mkl" not in used:
            self.weight = None

    def _pack(self, weight: Tensor) -> Tensor | None:
        if not _mkl_usable(weight):
            return None
        try:
            packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, PACK_ROWS)
        except RuntimeError as e:  # an MKL build without packing: keep the plain weight
            log.debug("MKL packing unavailable: %s", e)
            return None
        # _mkl_linear reads only the shape of its "original weight" (it falls back to it when
        # the row count differs from the one it is given, which never happens here).
        self._shape = torch.zeros((), dtype=weight.dtype).expand(self.out_features, self.in_features)
        if not self._agrees(weight, lambda x: torch.ops.mkl._mkl_linear(x, packed, self._shape, self.bias, x.size(0))):
            log.warning("MKL packed GEMM disagrees with F.linear; serving with plain weights")
            return None
        return packed

    def _onednn(self, weight: Tensor) -> Tensor | None:
        if weight.device.type != "cpu" or weight.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
            return None
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS)
            if self._agrees(weight, lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")):
                return packed
            log.warning("oneDNN's linear disagrees with F.linear; not using it")
        except (RuntimeError, AttributeError) as e:  # a torch without these ops
            log.debug("oneDNN packing unavailable: %s", e)
        return None

    def _agrees(self, weight: Tensor, product) -> bool:
        gen = torch.Generator().manual_seed(0)
        for rows in CHECK_ROWS:
            x = torch.randn(rows, self.in_features, generator=gen)
            want = F.linear(x, weight, self.bias)
            if not torch.allclose(product(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max())):
                return False
        return True

    def run(self, impl: str, flat: Tensor) -> Tensor:
        """flat: (rows, in) -> (rows, out) with implementation ``impl``."""
        if impl == "kernel":
            return self.small(flat)
        if impl == "kernel-rows":
            return self.small.rows_split(flat)
        if impl == "mkl-packed":
            return torch.ops.mkl._mkl_linear(flat, self.packed, self._shape, self.bias, flat.size(0))
        if impl == "onednn":
            return torch.ops.mkldnn._linear_pointwise(flat, self.onednn, self.bias, "none", [], "")
        return F.linear(flat, self.weight, self.bias)

    def __call__(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        rows = flat.size(0)
        impl = self.decode_impl if rows <= dk.MAX_ROWS else self.prefill_impl if rows <= LONG_FROM else self.long_impl
        return self.run(impl, flat).view(*x.shape[:-1], self.out_features)


def last_level_cache_bytes() -> int:
    """The largest CPU cache this process sees (32 MiB where the system does not say)."""
    sizes = []
    for name in ("SC_LEVEL4_CACHE_SIZE", "SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            sizes.append(os.sysconf(name))
        except (ValueError, OSError):  # not a name this system knows
            pass
    return max([s for s in sizes if s > 0], default=32 << 20)


class CacheEvictor:
    """``evict()`` reads a buffer twice the size of the last-level cache, so that what was read
    before (a weight just timed) must come from memory again. The buffer lives as long as this."""

    def __init__(self, nbytes: int | None = None):
        self.buffer = torch.ones((nbytes or 2 * last_level_cache_bytes()) // 4)

    def __call__(self) -> None:
        self.buffer.sum()


class ProductChooser:
    """Times the implementations of each weight shape once and remembers the fastest for a decode
    step, a prefill and a long prefill (module docstring). ``summary`` is what the start-up line
    says. ``evict``: makes the caches forget a weight before each decode timing (a
    ``CacheEvictor`` made for each new shape where not given). A long prefill's products are
    timed ``long_repeats`` times (each call is ~4x a prefill's: the start stays short)."""

    def __init__(self, decode_rows: int = dk.MAX_ROWS, prefill_rows: int = PREFILL_ROWS, repeats: int = 5,
                 evict=None, long_rows: int = LONG_PREFILL_ROWS, long_repeats: int = 3):
        self.decode_rows, self.prefill_rows, self.repeats = decode_rows, prefill_rows, repeats
        self.long_rows, self.long_repeats = long_rows, long_repeats
        self.evict = evict
        self.choices: dict[tuple, tuple[str, str, str]] = {}
        self.seconds = 0.0

    def choose(self, lin: PackedLinear, available: list[str], runs_in: str = "both",
               decode: str | None = None) -> tuple[str, str, str]:
        """(decode, prefill, long prefill) implementations for ``lin``'s shape, timed in the
        regimes it runs in; ``decode``: the decode's, where it is given rather than timed (module
        docstring)."""
        key = (lin.out_features, lin.in_features, lin.bias is not None, tuple(available), runs_in, decode)
        if key not in self.choices:
            t0 = time.perf_counter()
            prefill = long = None
            if runs_in != "prefill" and decode is None:
                evict = self.evict or (CacheEvictor() if len(available) > 1 else None)  # freed after this shape
                decode = self._fastest(lin, available, (1, self.decode_rows), evict)
            if runs_in != "decode":
                prefill = self._fastest(lin, available, (self.prefill_rows,), None)
                long = self._fastest(lin, available, (self.long_rows,), None, self.long_repeats)
            self.choices[key] = (decode or prefill, prefill or decode, long or prefill or decode)
            self.seconds += time.perf_counter() - t0
        return self.choices[key]

    def _fastest(self, lin: PackedLinear, impls: list[str], row_counts: tuple[int, ...], evict,
                 repeats: int | None = None) -> str:
        """The implementation of least median time summed over ``row_counts`` (``repeats`` calls
        of each, ``self.repeats`` if not given, in turns after a warm-up; a median, so that neither one lucky call nor one
        slowed by load elsewhere decides); with ``evict``, each call timed on a weight pushed out
        of the caches first."""
        if len(impls) == 1:
            return impls[0]
        gen = torch.Generator().manual_seed(0)
        xs = [torch.randn(rows, lin.in_features, generator=gen) for rows in row_counts]
        for impl in impls:
            for x in xs:
                lin.run(impl, x)  # warm
        times: dict[tuple[str, int], list[float]] = {(impl, i): [] for impl in impls for i in range(len(xs))}
        for _ in range(repeats or self.repeats):  # in turns, so that a burst of load elsewhere hits them alike
            for impl in impls:
                for i, x in enumerate(xs):
                    if evict is not None:
                        evict()
                    t = time.perf_counter()
                    lin.run(impl, x)
                    times[impl, i].append(time.perf_counter() - t)
        return min(impls, key=lambda impl: sum(statistics.median(times[impl, i]) for i in range(len(xs))))

    def summary(self) -> str:
        """e.g. "decode kernel x5, prefill mkl-packed x3 mkl x1, long prefill (over 256 rows)
        onednn x4 (timed in 0.21 s)"."""
        def count(i: int, regime: str) -> str:
            chosen = Counter(c[i] for key, c in self.choices.items() if key[4] in ("both", regime))
            return " ".join(f"{impl} x{n}" for impl, n in chosen.most_common())

        return (f"decode {count(0, 'decode')}, prefill {count(1, 'prefill')}, long prefill (over {LONG_FROM} rows) "
                f"{count(2, 'prefill')} (timed in {self.seconds:.2f} s)")


def small_linear(kernels: dk.Kernels | None, weight: Tensor, bias: Tensor | None) -> dk.SmallLinear | None:
    if kernels is None or weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    try:
        return kernels.small_linear(weight, bias)
    except dk.Unavailable as e:
        log.warning("%s; decoding with MKL", e)
        return None
