"""The way a decode step runs with the decode kernels, chosen by timing whole steps on this CPU
at the engine's start.

Three ways, each the same float32 math in another summation order:

- "one call": every decoder layer in one call into the kernels (``decode_stack.py``);
- "layer by layer": the layers one by one through the backend, the products in the kernels'
  panels, each a fork and join of the OpenMP team;
- "layer by layer, prefill products": the same, each product in the layout timed fastest for a
  prefill (MKL's packed GEMM or oneDNN's blocked one: ``products.ProductChooser``), gate and up
  as two products; raced only where some product's prefill layout is not the kernels' panels.

Why whole steps: a decode step reads every weight once for a few rows, and all of them together
are far larger than the caches, so a whole step streams them from memory as serving does, and
one product timed alone under a burst of load elsewhere cannot turn the stack off (timing each
product alone once chose oneDNN for one shape, which left the kernels' stack unused).

How (``race``): one step of each way at each of ``BATCHES`` sequences (1 and ``MAX_ROWS``, the
ends of the kernels' range) over ``CONTEXT`` cached tokens, in turns (way after way, batch after
batch, so that a burst of load hits them alike), ``repeats`` rounds after a warm-up one, or
fewer where ``budget_s`` runs out after ``min_repeats`` (or ``limit_s`` after one round, on a
machine so loaded that a round takes seconds); a way 1.5x slower than the best at both sizes
after one round, or 1.25x after two, is dropped from the race. Each way's score is the sum over
the batch sizes of its median over the best median at that size, so that a step of 1 sequence
counts as much as one of 16 (``fastest``); the least score wins. The start-up line gives the
medians and the seconds spent (the steps' set-up, the warm-up round, the timed rounds).

``$TENACIA_ISA`` forces the kernels and their one call, untimed, so that a run can be
reproduced exactly; so does ``EngineConfig.products = "default"`` (no timing at start).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from ..attention import PagedAttention
from ..kv_cache import CacheSpec, PagedKVCache
from ..mirror import DecodeLayout
from . import kernels as dk
from .decode_stack import DecodeStack

ONE_CALL, LAYERS, PREFILL_PRODUCTS = "one call", "layer by layer", "layer by layer, prefill products"
BATCHES = (1, dk.MAX_ROWS)
CONTEXT = 100  # cached tokens of each sequence in a timed step (bench/serve.py's prompts)
BLOCK = 16


def race(steps: dict[str, Callable[[int], None]], batches: tuple[int, ...], *, repeats: int = 5,
         min_repeats: int = 3, budget_s: float = 0.3, limit_s: float = 1.0, prune_first: float = 1.5,
         prune: float = 1.25, clock: Callable[[], float] = time.perf_counter,
         spent: dict[str, float] | None = None) -> dict[str, dict[int, list[float]]]:
    """Seconds of each of ``steps`` (name -> run one step of that many sequences) at each of
    ``batches``, ``repeats`` rounds in turns after one warm-up round; no more rounds after
    ``min_repeats`` once ``budget_s`` has passed since the first, nor after one once ``limit_s``
    has (a machine so loaded that three rounds take seconds). A way whose median is above
    ``prune_first`` times the best at every batch size after one round, or above ``prune`` after
    two or more, is timed no more. ``spent``, if given, gets the seconds of the warm-up
    ("warm-up"), of the rounds ("rounds") and their number ("round count")."""
    t0 = clock()
    for run in steps.values():  # warm-up: first touches, the OpenMP team, the caches' state
        for b in batches:
            run(b)
    times: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in steps}
    running = dict(steps)
    start = clock()
    for done in range(repeats):
        if done and clock() - start > (budget_s if done >= min_repeats else limit_s):
            break
        if done:
            bound = prune_first if done == 1 else prune
            best = {b: min(statistics.median(times[name][b]) for name in running) for b in batches}
            running = {name: run for name, run in running.items()
                       if any(statistics.median(times[name][b]) <= bound * best[b] for b in batches)}
        for b in batches:
            for name, run in running.items():
                t = clock()
                run(b)
                times[name][b].append(clock() - t)
    if spent is not None:
        first = next(iter(times.values()))[batches[0]]
        spent.update({"warm-up": start - t0, "rounds": clock() - start, "round count": len(first)})
    return times


def fastest(times: dict[str, dict[int, list[float]]]) -> str:
    """The way of least score (module docstring); a tie goes to the first named."""
    batches = next(iter(times.values())).keys()
    medians = {name: {b: statistics.median(ts[b]) for b in batches} for name, ts in times.items()}
    best = {b: min(m[b] for m in medians.values()) for b in batches}
    return min(medians, key=lambda name: sum(medians[name][b] / max(best[b], 1e-12) for b in batches))


class DecodeSteps:
    """A decode step of a ``PackedLlama`` at a few batch sizes, on a cache of its own (freed with
    this), each sequence with ``CONTEXT`` tokens cached: ``run(b)`` makes one step of ``b``."""

    def __init__(self, model, batches: tuple[int, ...]):
        cfg = model.cfg
        per_seq = -(-(CONTEXT + 1) // BLOCK)
        self.model = model
        self.cache = PagedKVCache(n_layers=cfg.n_layers, spec=CacheSpec.of(cfg), num_blocks=max(batches) * per_seq,
                                  block_size=BLOCK, dtype=torch.float32, device=torch.device("cpu"))
        gen = torch.Generator().manual_seed(0)  # the cache's zeros cost attention what any keys do
        self.inputs = {}
        for b in batches:  # a mirror each: switching batch would rebuild one
            tables = [list(range(s * per_seq, (s + 1) * per_seq)) for s in range(b)]
            slots = torch.tensor([t[CONTEXT // BLOCK] * BLOCK + CONTEXT % BLOCK for t in tables])
            attention = PagedAttention(self.cache, model.backend)
            attention.begin_decode(DecodeLayout(slots, tuple(range(b)), [CONTEXT + 1] * b, tables))
            tokens = torch.randint(0, cfg.vocab_size, (b,), generator=gen)
            self.inputs[b] = (tokens, torch.full((b,), CONTEXT, dtype=torch.int64), attention)

    def run(self, b: int) -> None:
        tokens, positions, attention = self.inputs[b]
        with torch.inference_mode():
            self.model.hidden(tokens, positions, attention, decode=True)


PRODUCTS = ("qkv", "wo", "gate", "up", "down")  # a layer's products, the fused gate/up aside


class Ways:
    """Switches ``model`` between the ways it can decode (module docstring): ``arrange(way)``."""

    def __init__(self, model, stack: DecodeStack):
        self.model, self.stack = model, stack
        self.gate_ups = [layer.gate_up for layer in model.layers]  # the prefill products' way runs gate and up apart
        self.built = [{name: getattr(layer, name).decode_impl for name in PRODUCTS} for layer in model.layers]
        self.names = [ONE_CALL, LAYERS] + ([PREFILL_PRODUCTS] if any(
            getattr(layer, name).prefill_impl != "kernel" for layer in model.layers for name in PRODUCTS) else [])

    def arrange(self, way: str) -> None:
        self.model.decode_stack = self.stack if way == ONE_CALL else None
        for layer, gate_up, built in zip(self.model.layers, self.gate_ups, self.built, strict=True):
            layer.gate_up = None if way == PREFILL_PRODUCTS else gate_up
            for name in PRODUCTS:
                lin = getattr(layer, name)
                lin.decode_impl = lin.prefill_impl if way == PREFILL_PRODUCTS else built[name]

    def keep(self, way: str) -> None:
        """Decode ``way`` from now on, and free the layouts it does not read."""
        self.arrange(way)
        if way == PREFILL_PRODUCTS:  # the kernels' panels of the layers' products are read no more
            for layer in self.model.layers:
                for name in PRODUCTS:
                    getattr(layer, name).drop_unused()


def choose(model, stack: DecodeStack, clock: Callable[[], float] = time.perf_counter) -> str:
    """Time the ways ``model`` can decode (module docstring), leave it decoding the fastest, and
    return the start-up line's words for it."""
    t0 = clock()
    ways = Ways(model, stack)
    steps = DecodeSteps(model, BATCHES)
    setup = clock() - t0

    def step(way: str) -> Callable[[int], None]:
        def run(b: int) -> None:
            ways.arrange(way)
            steps.run(b)
        return run

    spent: dict[str, float] = {}
    times = race({way: step(way) for way in ways.names}, BATCHES, clock=clock, spent=spent)
    chosen = fastest(times)
    ways.keep(chosen)
    ms = "; ".join(f"{way} " + "/".join(f"{statistics.median(times[way][b]) * 1e3:.1f}" for b in BATCHES)
                   for way in ways.names)
    sizes = "/".join(str(b) for b in BATCHES)
    return (f"decode {chosen} (ms a step at {sizes} sequences: {ms}; timed in {clock() - t0:.2f} s: "
            f"set-up {setup:.2f}, warm-up {spent['warm-up']:.2f}, {spent['round count']} rounds {spent['rounds']:.2f})")
