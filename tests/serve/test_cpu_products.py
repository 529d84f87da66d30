"""Which implementation runs each product: timed once per shape, the one of least median time kept
for a decode, a prefill and a long prefill, the layouts none chose dropped; the timing rule checked
with a fake clock."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tenacia.serve.engine.cpu import build as dk_build
from tenacia.serve.engine.cpu import kernels as dk
from tenacia.serve.engine.cpu import products
from tenacia.serve.engine.cpu.products import PackedLinear, ProductChooser

from ..conftest import needs_cc


class FakeClock:
    """perf_counter that only moves when a product runs (by its cost)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def generic_kernels():
    lib = dk_build.library("generic")
    if isinstance(lib, str):
        pytest.skip(lib)
    return dk.Kernels("generic", lib)


@needs_cc
def test_the_fastest_is_kept_per_regime_and_the_others_dropped(generic_kernels, monkeypatch):
    # the kernel fastest for 16 rows; MKL (packed where it can pack) fastest for 128; oneDNN for 512
    cost = {("kernel", 16): 1.0, ("onednn", 16): 2.0, ("mkl-packed", 16): 3.0, ("mkl", 16): 3.0,
            ("kernel", 1): 0.5, ("onednn", 1): 2.0, ("mkl-packed", 1): 1.0, ("mkl", 1): 1.0,
            ("kernel", 128): 9.0, ("onednn", 128): 8.0, ("mkl-packed", 128): 5.0, ("mkl", 128): 5.0,
            ("kernel", 512): 30.0, ("onednn", 512): 10.0, ("mkl-packed", 512): 20.0, ("mkl", 512): 20.0}
    clock = FakeClock()
    monkeypatch.setattr(products.time, "perf_counter", clock)
    real_run = PackedLinear.run

    def run(self, impl, flat):
        clock.now += cost.get((impl, flat.size(0)), 0.0)
        return real_run(self, impl, flat)

    monkeypatch.setattr(PackedLinear, "run", run)
    chooser = ProductChooser(repeats=2, evict=lambda: None)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(48, 32, generator=gen)
    lin = PackedLinear(w, kernels=generic_kernels, chooser=chooser)
    mkl = "mkl-packed" if products._mkl_usable(w) and lin.packed is not None else "mkl"
    long = "onednn" if torch.backends.mkldnn.is_available() else mkl
    assert (lin.decode_impl, lin.prefill_impl, lin.long_impl) == ("kernel", mkl, long)
    assert lin.small is not None and (lin.onednn is not None) == (long == "onednn")  # only what runs is kept
    assert (lin.packed is not None) == (mkl == "mkl-packed") and (lin.weight is not None) == (mkl == "mkl")
    ran = []
    monkeypatch.setattr(PackedLinear, "run", lambda self, impl, flat: ran.append(impl) or real_run(self, impl, flat))
    for rows in (1, 16, 17, products.LONG_FROM, products.LONG_FROM + 1, 600):
        x = torch.randn(rows, 32, generator=gen)
        torch.testing.assert_close(lin(x), F.linear(x, w), rtol=1e-5, atol=1e-4)
    assert ran == ["kernel", "kernel", mkl, mkl, long, long]  # each regime's choice, by row count
    monkeypatch.setattr(PackedLinear, "run", run)
    timed = clock.now
    again = PackedLinear(torch.randn(48, 32, generator=gen), kernels=generic_kernels, chooser=chooser)
    assert (again.decode_impl, again.prefill_impl, again.long_impl) == ("kernel", mkl, long)
    assert clock.now == timed  # not timed again
    assert chooser.summary().startswith(f"decode kernel x1, prefill {mkl} x1, long prefill (over 256 rows) {long} x1")


@needs_cc
def test_a_prefill_takes_the_least_median_time_not_one_lucky_call(generic_kernels, monkeypatch):
    # at 128 rows the kernel has one call of 1 among 9s (median 9), MKL and oneDNN run 5 every call
    clock, calls = FakeClock(), {"kernel": 0}
    monkeypatch.setattr(products.time, "perf_counter", clock)
    real_run = PackedLinear.run

    def run(self, impl, flat):
        if flat.size(0) == products.PREFILL_ROWS:
            calls[impl] = calls.get(impl, 0) + 1
            clock.now += (1.0 if calls[impl] == 3 else 9.0) if impl == "kernel" else 5.0
        return real_run(self, impl, flat)

    monkeypatch.setattr(PackedLinear, "run", run)
    lin = PackedLinear(torch.randn(48, 32), kernels=generic_kernels,
                       chooser=ProductChooser(repeats=5, evict=lambda: None), runs_in="prefill")
    assert calls["kernel"] == 1 + 5  # the warm-up call, then five timed
    assert lin.prefill_impl != "kernel"  # best of five would have taken the kernel (1 < 5)


@needs_cc
def test_without_a_chooser_decode_takes_the_kernel_and_prefill_mkl(generic_kernels):
    w = torch.randn(48, 32)
    lin = PackedLinear(w, kernels=generic_kernels)
    assert lin.decode_impl == "kernel" and lin.prefill_impl in ("mkl-packed", "mkl")
    plain = PackedLinear(w, kernels=None)
    assert plain.decode_impl == plain.prefill_impl == lin.prefill_impl and plain.small is None
    for rows in (3, 20):
        x = torch.randn(rows, 32)
        torch.testing.assert_close(lin(x), F.linear(x, w), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(plain(x), F.linear(x, w), rtol=1e-5, atol=1e-4)


def test_a_decode_is_timed_on_evicted_weights_at_1_and_16_rows(monkeypatch):
    # no decode kernels: oneDNN fastest at 16 rows alone, MKL over 1 and 16 rows together: the sum decides
    cost = {("onednn", 1): 4.0, ("onednn", 16): 2.0}
    clock, state, runs = FakeClock(), {"cold": False}, []
    monkeypatch.setattr(products.time, "perf_counter", clock)
    real_run = PackedLinear.run

    def run(self, impl, flat):
        rows = flat.size(0)
        clock.now += cost.get((impl, rows), {1: 1.0, 16: 3.0}.get(rows, 5.0))  # MKL, packed or plain
        runs.append((impl, rows, state["cold"]))
        state["cold"] = False
        return real_run(self, impl, flat)

    monkeypatch.setattr(PackedLinear, "run", run)
    chooser = ProductChooser(repeats=3, evict=lambda: state.update(cold=True))
    w = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    lin = PackedLinear(w, kernels=None, chooser=chooser)
    impls = len({impl for impl, _, _ in runs})
    if impls < 2:
        pytest.skip("this torch has no oneDNN linear to race against MKL")
    assert lin.decode_impl in ("mkl-packed", "mkl")
    cold = [(rows, c) for _, rows, c in runs if c]
    assert sorted(cold) == sorted([(1, True), (16, True)] * 3 * impls)  # every timed decode run, evicted first
    assert not any(c for _, rows, c in runs if rows == products.PREFILL_ROWS)  # a prefill's weight stays cached


@needs_cc
def test_with_the_decode_kernels_a_decode_takes_their_panels_untimed(generic_kernels, monkeypatch):
    """The decode stack is made of the kernels' panels: a decode is not timed, a prefill is."""
    runs = []
    real_run = PackedLinear.run
    monkeypatch.setattr(PackedLinear, "run", lambda self, impl, flat: runs.append(flat.size(0)) or real_run(self, impl, flat))
    chooser = ProductChooser(repeats=2, evict=lambda: pytest.fail("a decode was timed"))
    lin = PackedLinear(torch.randn(48, 32), kernels=generic_kernels, chooser=chooser)
    assert lin.decode_impl == "kernel" and set(runs) == {products.PREFILL_ROWS, products.LONG_PREFILL_ROWS}
    assert chooser.summary().startswith("decode kernel x1, prefill ")


def test_the_evictor_reads_twice_the_last_level_cache():
    assert products.last_level_cache_bytes() > 0
    assert products.CacheEvictor().buffer.numel() * 4 == 2 * products.last_level_cache_bytes()
