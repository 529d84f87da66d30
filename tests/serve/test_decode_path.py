"""The way a decode step runs, timed on whole steps at start (``engine/cpu/decode_path.py``): the
race's rules with a fake clock, the choice made, kept and named on the start-up line, a fake
clock that makes another way faster picks that way (and frees what it does not read), and
``$TENACIA_ISA`` forcing the kernels' one call untimed."""

from __future__ import annotations

import pytest
import torch

from tenacia.serve.engine.cpu import build as decode_build
from tenacia.serve.engine.cpu import decode_path
from tenacia.serve.engine.cpu import kernels as decode_kernels
from tenacia.serve.engine.cpu.backend import KernelBackend, cpu_backend
from tenacia.serve.engine.cpu.decode_path import LAYERS, ONE_CALL, PREFILL_PRODUCTS, fastest, race
from tenacia.serve.engine.cpu.decode_stack import DecodeStack
from tenacia.serve.engine.cpu.products import ProductChooser
from tenacia.serve.engine.kv_cache import CacheSpec
from tenacia.serve.engine.packed import PackedLlama

from ..conftest import needs_cc
from .test_decode_stack import decode_once, small_llama


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_the_race_warms_up_then_times_every_way_in_turns_and_stops_when_the_budget_is_spent():
    clock, calls = FakeClock(), []

    def way(name: str, seconds: float):
        def run(b: int) -> None:
            calls.append((name, b))
            clock.advance(seconds * b)
        return run

    times = race({"a": way("a", 0.1), "b": way("b", 0.2)}, (1, 4), repeats=5, min_repeats=2, budget_s=1.5, limit_s=10.0,
                 prune_first=3.0, clock=clock)
    # warm-up a1 a4 b1 b4, then rounds of a1 b1 a4 b4: after two rounds 3.0 s have passed
    assert calls[:4] == [("a", 1), ("a", 4), ("b", 1), ("b", 4)]
    assert calls[4:8] == [("a", 1), ("b", 1), ("a", 4), ("b", 4)]
    assert len(calls) == 4 + 2 * 4
    want = {"a": {1: [0.1, 0.1], 4: [0.4, 0.4]}, "b": {1: [0.2, 0.2], 4: [0.8, 0.8]}}
    assert {n: {b: pytest.approx(ts) for b, ts in by_b.items()} for n, by_b in want.items()} == times
    times = race({"a": way("a", 0.0)}, (1,), repeats=5, min_repeats=2, budget_s=1.0, clock=clock)
    assert len(times["a"][1]) == 5  # within the budget: every round


def test_a_way_far_slower_than_the_best_everywhere_leaves_the_race_after_two_rounds():
    clock = FakeClock()

    def way(seconds_by_batch: dict[int, float]):
        return lambda b: clock.advance(seconds_by_batch[b])

    times = race({"fast": way({1: 1.0, 16: 2.0}), "slow at 1": way({1: 2.0, 16: 2.0}),
                  "slow": way({1: 1.3, 16: 2.6})}, (1, 16), repeats=4, min_repeats=4, limit_s=1e9, clock=clock)
    assert [len(times[name][1]) for name in ("fast", "slow at 1", "slow")] == [4, 4, 2]
    times = race({"fast": way({1: 1.0, 16: 2.0}), "twice as slow": way({1: 2.0, 16: 4.0}),
                  "slow": way({1: 1.3, 16: 2.6})}, (1, 16), repeats=4, min_repeats=4, limit_s=1e9, clock=clock)
    assert [len(times[name][1]) for name in ("fast", "twice as slow", "slow")] == [4, 1, 2]  # 1.5x: one round


def test_on_a_machine_so_loaded_that_a_round_takes_seconds_the_race_stops_early_but_after_one_round():
    clock = FakeClock()
    spent: dict[str, float] = {}
    times = race({"a": lambda b: clock.advance(1.0), "b": lambda b: clock.advance(1.1)}, (1, 16), repeats=5,
                 min_repeats=3, limit_s=3.0, clock=clock, spent=spent)
    # warm-up 4.2 s, then rounds of 4.2 s: past the 3 s limit after the first
    assert [len(times[name][16]) for name in "ab"] == [1, 1]
    assert spent == {"warm-up": pytest.approx(4.2), "rounds": pytest.approx(4.2), "round count": 1}
    times = race({"a": lambda b: clock.advance(1.0)}, (1,), repeats=5, min_repeats=3, limit_s=100.0,
                 budget_s=0.5, clock=clock)
    assert len(times["a"][1]) == 3  # under the limit: at least min_repeats


def test_the_fastest_way_counts_each_batch_size_alike_by_medians():
    # "b" saves 5 ms at 16 sequences but loses half its time at 1: relative to the best, it loses
    times = {"a": {1: [10.0, 10.0, 99.0], 16: [40.0, 41.0, 40.0]},
             "b": {1: [15.0, 15.0, 15.0], 16: [35.0, 35.0, 35.0]}}
    assert fastest(times) == "a"  # medians 10, 40 (a 99 ms outlier ignored): 1 + 40/35 < 1.5 + 1
    times["b"][1] = [11.0] * 3
    assert fastest(times) == "b"
    assert fastest({"x": {1: [1.0]}, "y": {1: [1.0]}}) == "x"


def _kernel_backend(clock, chooser=None) -> KernelBackend:
    isa = best_isa()
    return KernelBackend(decode_kernels.Kernels(isa, decode_build.library(isa)), chooser or ProductChooser(),
                         clock=clock)


def best_isa() -> str:
    kernels, isa = decode_kernels.choose()
    assert kernels is not None, isa
    return isa


@needs_cc
def test_the_timed_choice_is_made_kept_and_named_on_the_start_up_line():
    backend = _kernel_backend(FakeClock())  # every way takes no time: the first (one call) wins ties
    packed = PackedLlama(small_llama(3, 1, 64, False), backend)
    assert isinstance(packed.decode_stack, DecodeStack)
    line = backend.describe()[0]
    assert f"decode {ONE_CALL} (ms a step at 1/16 sequences: {ONE_CALL} 0.0/0.0; {LAYERS} 0.0/0.0" in line, line


@needs_cc
def test_a_clock_on_which_the_layers_run_faster_picks_them_and_they_decode_the_same(monkeypatch):
    clock = FakeClock()
    one_call = DecodeStack.__call__

    def slow_stack(self, *args):
        clock.advance(0.01)
        return one_call(self, *args)

    monkeypatch.setattr(DecodeStack, "__call__", slow_stack)
    model = small_llama(3, 1, 64, False)
    backend = _kernel_backend(clock)
    packed = PackedLlama(model, backend)
    assert packed.decode_stack is None
    assert f"decode {LAYERS} (" in backend.describe()[0]
    assert all(layer.gate_up is not None and layer.wo.decode_impl == "kernel" for layer in packed.layers)
    monkeypatch.setattr(DecodeStack, "__call__", one_call)
    stacked = PackedLlama(model, KernelBackend(backend.kernels, None))
    assert stacked.decode_stack is not None
    stored = torch.randn(2, 2, 4 * 16, 1, 64, generator=torch.Generator().manual_seed(1))
    for got, want in zip(decode_once(packed, stored, [5, 20], torch.tensor([3, 9])),
                         decode_once(stacked, stored, [5, 20], torch.tensor([3, 9])), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


class MklPrefill(ProductChooser):
    """Every prefill product in MKL's packed layout, untimed."""

    def choose(self, lin, available, runs_in="both", decode=None):
        prefill = "mkl-packed" if "mkl-packed" in available and runs_in != "decode" else available[0]
        return decode or prefill, prefill, prefill


@needs_cc
def test_a_clock_on_which_the_kernels_products_are_slow_picks_the_prefill_products_and_frees_the_panels(monkeypatch):
    if not torch._C.has_mkl:
        pytest.skip("needs MKL's packed layout")
    clock = FakeClock()
    small_call = decode_kernels.SmallLinear.__call__
    one_call = DecodeStack.__call__
    monkeypatch.setattr(DecodeStack, "__call__", lambda self, *a: (clock.advance(0.01), one_call(self, *a))[1])
    monkeypatch.setattr(decode_kernels.SmallLinear, "__call__",
                        lambda self, x: (clock.advance(0.01), small_call(self, x))[1])
    model = small_llama(4, 2, 48, True)
    backend = _kernel_backend(clock, MklPrefill())
    packed = PackedLlama(model, backend)
    assert packed.decode_stack is None and f"decode {PREFILL_PRODUCTS} (" in backend.describe()[0]
    for layer in packed.layers:
        assert layer.gate_up is None
        for name in decode_path.PRODUCTS:
            lin = getattr(layer, name)
            assert lin.decode_impl == "mkl-packed" and lin.small is None, (name, lin.decode_impl)
    monkeypatch.setattr(decode_kernels.SmallLinear, "__call__", small_call)
    monkeypatch.setattr(DecodeStack, "__call__", one_call)
    stacked = PackedLlama(model, KernelBackend(backend.kernels, None))
    stored = torch.randn(2, 2, 4 * 16, 2, 48, generator=torch.Generator().manual_seed(2))
    for got, want in zip(decode_once(packed, stored, [7, 31], torch.tensor([1, 100])),
                         decode_once(stacked, stored, [7, 31], torch.tensor([1, 100])), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_cc
def test_tenacia_isa_forces_the_kernels_one_call_untimed(monkeypatch):
    isa = best_isa()
    monkeypatch.setenv(decode_kernels.ISA_ENV, isa)

    def no_race(*args) -> str:
        raise AssertionError("a forced build times no decode")

    monkeypatch.setattr(decode_path, "choose", no_race)
    backend = cpu_backend(kernels=True, products="timed", n_heads=3, spec=CacheSpec.grouped(1, 64))
    assert isinstance(backend, KernelBackend) and backend.forced
    packed = PackedLlama(small_llama(3, 1, 64, False), backend)
    assert packed.decode_stack is not None
    line = backend.describe()[0]  # the prefill's way is timed all the same (test_prefill_path.py)
    assert line.startswith(f"on ({isa}; decode in one call (untimed: {decode_kernels.ISA_ENV} forces the kernels); prefill "), line
