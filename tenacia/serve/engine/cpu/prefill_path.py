"""How a short prefill's products share the threads, chosen by timing whole prefills on this CPU
at the engine's start. (A prefill of more than ``products.LONG_FROM`` rows, such as a burst of
prompts prefilled together, runs each product's long-prefill choice, timed alone at
``products.LONG_PREFILL_ROWS`` rows, whatever way is chosen here.)

Three ways, each the same float32 math in another summation order:

- "products as timed": each product in the layout ``products.ProductChooser`` timed fastest for
  its shape alone (oneDNN's, MKL's packed GEMM, or the kernels' panels), each dealing its
  output's columns among the threads;
- "kernel panels": every product in the kernels' panels, their columns dealt among the threads
  (raced only where some product timed another layout faster alone: at 100 tokens the panels
  made whole prefills 3% faster than the products as timed, oneDNN's for two of four, on the
  2-core Zen 4 guest, although alone, in cache, they were within noise of each other;
  docs/benchmarks.md, 2026-12-05);
- "rows shared": every product in the kernels' panels with the prompt's rows dealt among the
  threads instead (``SmallLinear.rows_split``: thread t of T takes rows n t / T .. n (t + 1) / T
  against every panel), as the kernels' norm, rotary and SiLU deal them, so that between the
  attentions a thread reads back from its own caches the rows it wrote itself.

Why whole prefills: a product timed alone finds its input in both cores' caches; in a prefill,
a product whose threads share the columns reads every row of its input, half of them written by
the other core. On the 2-core Zen 4 guest, whole 100-token prefills ran 1-9% faster with the
rows shared in the `avx512` build (4-5% at 40 and 1,600 tokens, 1% slower at 1,000), but 6-7%
slower in the `avx2` build, whose columns there are oneDNN's products (docs/benchmarks.md, issue
12, "A prefill's rows dealt to the threads that wrote them"): so it is timed, not fixed.

How: ``decode_path.race`` over whole prefills of one sequence of ``TOKENS`` new tokens on a cache
of its own (freed after), the ways in turns; the fastest is kept (a tie goes to "products as
timed") and the layouts no regime reads are freed. Raced where every product of the model still
has the kernels' panels (a decode that chose the prefill's products freed them) and the products
are timed (``EngineConfig.products = "timed"``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from ..attention import PagedAttention, PrefillLayout
from ..kv_cache import CacheSpec, PagedKVCache
from .decode_path import PRODUCTS, fastest, race

AS_TIMED, COLUMNS, ROWS = "products as timed", "kernel panels", "rows shared"
IMPL = {COLUMNS: "kernel", ROWS: "kernel-rows"}  # the product layout a way sets for every product
TOKENS = 100  # a timed prefill's prompt (bench/serve.py's prompts)
BLOCK = 16


class PrefillSteps:
    """Prefills of one new sequence of ``tokens`` tokens through ``model`` (a ``PackedLlama``), on
    a cache of its own (freed with this): ``run(tokens)`` makes one."""

    def __init__(self, model, tokens: tuple[int, ...]):
        cfg = model.cfg
        self.model = model
        self.cache = PagedKVCache(n_layers=cfg.n_layers, spec=CacheSpec.of(cfg), num_blocks=-(-max(tokens) // BLOCK),
                                  block_size=BLOCK, dtype=torch.float32, device=torch.device("cpu"))
        self.attention = PagedAttention(self.cache, model.backend)
        gen = torch.Generator().manual_seed(0)
        self.inputs = {n: (torch.randint(0, cfg.vocab_size, (n,), generator=gen), torch.arange(n),
                           PrefillLayout(torch.arange(n), [n], [0], [None]), torch.tensor([n - 1])) for n in tokens}

    def run(self, n: int) -> torch.Tensor:
        tokens, positions, layout, last = self.inputs[n]
        self.attention.begin_prefill(layout)
        with torch.inference_mode():
            return self.model.hidden(tokens, positions, self.attention, decode=False, keep=last)


class Ways:
    """Switches ``model``'s (short) prefill products between the ways: ``arrange(way)``."""

    def __init__(self, model):
        self.products = [getattr(layer, name) for layer in model.layers for name in PRODUCTS]
        self.timed = [lin.prefill_impl for lin in self.products]

    def arrange(self, way: str) -> None:
        for lin, timed in zip(self.products, self.timed, strict=True):
            lin.prefill_impl = IMPL.get(way, timed)

    def keep(self, way: str) -> None:
        """Prefill ``way`` from now on, and free the layouts no regime reads any more."""
        self.arrange(way)
        for lin in self.products:
            lin.drop_unused()


def why_not(model) -> str | None:
    """None where the rows can be shared (every product has the kernels' panels), else why not."""
    if any(getattr(layer, name).small is None for layer in model.layers for name in PRODUCTS):
        return "a product without the kernels' panels"
    return None


def choose(model, clock: Callable[[], float] = time.perf_counter) -> str:
    """Time the ways ``model`` can prefill (module docstring), leave it prefilling the fastest, and
    return the start-up line's words for it."""
    t0 = clock()
    ways, steps = Ways(model), PrefillSteps(model, (TOKENS,))

    def step(way: str) -> Callable[[int], None]:
        def run(n: int) -> None:
            ways.arrange(way)
            steps.run(n)
        return run

    candidates = (AS_TIMED, COLUMNS, ROWS) if any(impl != "kernel" for impl in ways.timed) else (AS_TIMED, ROWS)
    times = race({way: step(way) for way in candidates}, (TOKENS,), repeats=5, min_repeats=3, budget_s=1.0,
                 limit_s=4.0, clock=clock)
    chosen = fastest(times)
    ways.keep(chosen)
    ms = "; ".join(f"{way} {statistics.median(times[way][TOKENS]) * 1e3:.1f}" for way in times)
    return f"prefill {chosen} (ms a prefill of {TOKENS} tokens: {ms}; timed in {clock() - t0:.2f} s)"
