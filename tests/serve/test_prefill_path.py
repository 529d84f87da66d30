"""How a prefill's products share the threads (``engine/cpu/prefill_path.py``): the rows dealt
among the threads give ``F.linear``'s product for every row count and thread count; a tie keeps
the products as timed, named on the start-up line; a clock on which the columns are slow picks
the rows for every product, frees the layouts no regime reads, and prefills the same; one on which
the kernels' panels are slow alone but fast in a whole prefill picks them for a short prefill and
leaves a long one its own choice; a model whose decode freed the kernels' panels is not raced."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tenacia.serve.engine.cpu import prefill_path, products
from tenacia.serve.engine.cpu.backend import KernelBackend
from tenacia.serve.engine.cpu.decode_path import PRODUCTS
from tenacia.serve.engine.cpu.prefill_path import AS_TIMED, COLUMNS, ROWS, PrefillSteps
from tenacia.serve.engine.cpu.products import (
    LONG_PREFILL_ROWS,
    PREFILL_ROWS,
    PackedLinear,
    ProductChooser,
)
from tenacia.serve.engine.packed import PackedLlama

from ..conftest import needs_cc
from .test_decode_path import FakeClock
from .test_decode_stack import kernels, small_llama  # noqa: F401  (kernels: the fixture of every build)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_rows_dealt_among_the_threads_give_f_linear(kernels, threads):  # noqa: F811
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(threads)
        for out_f, in_f, bias in ((960, 576, False), (37, 19, True), (16, 1536, False)):
            w = torch.randn(out_f, in_f, generator=gen)
            b = torch.randn(out_f, generator=gen) if bias else None
            lin = kernels.small_linear(w, b)
            for rows in (1, 2, 3, 17, 50, 100, 101):
                x = torch.randn(rows, 2 * in_f, generator=gen)[:, ::2]  # not contiguous
                want = F.linear(x, w, b)
                torch.testing.assert_close(lin.rows_split(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    finally:
        torch.set_num_threads(before)


def _backend(kernels, clock) -> KernelBackend:  # noqa: F811
    return KernelBackend(kernels, ProductChooser(), clock=clock)


@needs_cc
def test_a_tie_keeps_the_products_as_timed_and_names_the_way_on_the_start_up_line(kernels):  # noqa: F811
    backend = _backend(kernels, FakeClock())  # no way takes any time
    packed = PackedLlama(small_llama(3, 1, 64, False), backend)
    line = backend.describe()[0]
    assert f"prefill {AS_TIMED} (ms a prefill of 100 tokens: {AS_TIMED} 0.0; " in line, line
    assert f"{ROWS} 0.0; timed in" in line, line
    assert all(getattr(layer, name).prefill_impl != "kernel-rows" for layer in packed.layers for name in PRODUCTS)


@needs_cc
def test_a_clock_on_which_the_columns_are_slow_picks_the_rows_frees_the_rest_and_prefills_the_same(kernels,  # noqa: F811
                                                                                                   monkeypatch):
    clock = FakeClock()
    run = PackedLinear.run

    def timed_run(self, impl, flat):
        if impl != "kernel-rows" and flat.size(0) > 16:
            clock.advance(0.001)
        return run(self, impl, flat)

    monkeypatch.setattr(PackedLinear, "run", timed_run)
    monkeypatch.setattr(products.time, "perf_counter", clock)  # the products timed alone: all tie, the panels kept
    model = small_llama(4, 2, 48, True)
    packed = PackedLlama(model, _backend(kernels, clock))
    assert f"prefill {ROWS} (" in packed.backend.describe()[0]
    for layer in packed.layers:
        for name in PRODUCTS:
            lin = getattr(layer, name)
            assert lin.prefill_impl == "kernel-rows" and lin.small is not None, name
            assert lin.packed is None and lin.onednn is None and lin.weight is None, name  # no regime reads them
    monkeypatch.setattr(PackedLinear, "run", run)
    as_timed = PackedLlama(model, KernelBackend(kernels, None))  # no chooser: no race, MKL's or plain products
    for n in (17, 100):
        torch.testing.assert_close(PrefillSteps(packed, (n,)).run(n), PrefillSteps(as_timed, (n,)).run(n),
                                   rtol=1e-4, atol=1e-4)


@needs_cc
def test_a_model_whose_products_lack_the_kernels_panels_is_not_raced(kernels, monkeypatch):  # noqa: F811
    def no_race(*args) -> str:
        raise AssertionError("nothing to race")

    backend = _backend(kernels, FakeClock())
    packed = PackedLlama(small_llama(3, 1, 64, False), backend)
    packed.layers[1].down.small = None
    monkeypatch.setattr(prefill_path, "choose", no_race)
    backend.arrange_prefill(packed)
    assert backend.describe()[0].endswith(f"; prefill {AS_TIMED}: a product without the kernels' panels)")


@needs_cc
def test_panels_slow_alone_but_fast_in_a_whole_prefill_win_the_short_prefills_only(kernels, monkeypatch):  # noqa: F811
    clock = FakeClock()
    run = PackedLinear.run

    def timed_run(self, impl, flat):
        rows = flat.size(0)  # the panels slow where the chooser times products alone, the rest slow in a prefill
        if rows > 16 and (impl == "kernel") == (rows in (PREFILL_ROWS, LONG_PREFILL_ROWS)):
            clock.advance(0.001)
        return run(self, impl, flat)

    monkeypatch.setattr(PackedLinear, "run", timed_run)
    monkeypatch.setattr(products.time, "perf_counter", clock)
    model = small_llama(4, 2, 48, True)
    packed = PackedLlama(model, _backend(kernels, clock))
    line = packed.backend.describe()[0]
    assert f"prefill {COLUMNS} (" in line and f"{AS_TIMED} " in line and f"{ROWS} " in line, line
    for layer in packed.layers:
        for name in PRODUCTS:
            lin = getattr(layer, name)
            assert lin.prefill_impl == "kernel" and lin.long_impl != "kernel", (name, lin.long_impl)
    ran: list[tuple[int, str]] = []
    monkeypatch.setattr(PackedLinear, "run", lambda self, impl, flat: ran.append((flat.size(0), impl)) or run(self, impl, flat))
    plain = PackedLlama(model, KernelBackend(kernels, None))  # MKL's or plain products, untimed
    monkeypatch.setattr(products, "LONG_FROM", 64)  # the model's context is 256: a long prefill of 100 rows
    for n in (17, 100):  # a short prefill in the panels, a long one in its own layout
        ran.clear()
        got = PrefillSteps(packed, (n,)).run(n)
        assert {impl for rows, impl in ran if rows == n} == ({"kernel"} if n == 17 else {packed.layers[0].wo.long_impl})
        torch.testing.assert_close(got, PrefillSteps(plain, (n,)).run(n), rtol=1e-4, atol=1e-4)
