"""What low-communication training costs in quality: the tokens it needs for ddp's loss.

A run that syncs every H steps, or compresses what it sends, may need more tokens to reach the
loss synchronous data parallelism reaches. The planner charges it as a token overhead:

    tokens needed = token budget x (1 + base_cost + cost_per_doubling x max(0, log2(H / free_inner_steps))
                                      + compression cost (by the exchange's form for int2) + top-k cost)
    token efficiency = token budget / tokens needed

for ``diloco`` and ``streaming`` (``ddp`` is the reference: efficiency 1). What the papers and
tenacia's own probes report, and what the defaults take from them:

- DiLoCo (Douillard et al. 2023, arXiv 2311.08105): 8 workers at H = 500 perform as well as
  fully synchronous training while communicating 500x less; its ablation over H shows quality
  falling as syncs grow rarer (H = 500 its chosen trade-off). Default ``free_inner_steps`` 500,
  ``base_cost`` 0; that H up to 500 costs nothing and beyond it a fixed share per doubling is
  the planner's shape, not the paper's.
- OpenDiLoCo (arXiv 2407.07852): the reproduction at H = 500, pseudo-gradients all-reduced in
  FP16 "without any performance degradation"; INTELLECT-1 (arXiv 2412.01152): 10B parameters at
  H = 100 with an int8 all-reduce, "comparable performance" at 400x less bandwidth. Default
  ``int8_cost`` 0.
- Streaming DiLoCo (arXiv 2501.18512): fragments synced in turn, overlapped with inner steps,
  outer gradients in 4 bits: "similar quality" with two orders of magnitude less bandwidth.
  Default ``int4_cost`` 0.
- SparseLoCo (arXiv 2508.15706): top-k at 1-3% density with 2-bit values and error feedback
  outperforms full-precision DiLoCo (512M parameters); it also says DiLoCo-family methods "can
  slightly degrade performance compared to" AdamW DDP. Default ``topk_cost`` 0.
- tenacia's own probes (docs/benchmarks.md, "Probes of 2026-12-04 18:45-19:18" and "Probes of
  2026-12-04 18:32-20:16": a micro model, 4 members, diloco H = 100, outer Nesterov 0.7/0.9,
  dense, blocks of 256, error feedback, a repeated corpus; 1-4x the bench's token budget at a
  constant inner rate, 16x with it decayed), each compressed arm's eval loss turned into the
  extra tokens fp32 diloco needs to reach it, read off fp32's own loss curve
  (``bench/compression_tokens.py``, seeds 1 and 2): int2 through the all-gather, quantized once,
  +10.0% (the median of 4 cells, +7.7 to +12.7%): default ``int2_cost`` 0.10; int2 through the
  reduce-scatter, its sums quantized a second time and that error dropped (tenacia's form),
  +11.4% (the median of 10 cells, +2.5 to +27.6%; seed 1 +11.0 to +27.6%, seed 2 +2.5 to
  +11.9%): default ``int2_reduce_scatter_cost`` 0.114. int4 through the reduce-scatter in
  the trainer's form (its sums' error dropped), -0.6% (8 cells, -10.3 to +4.9%; the earlier
  form, that error folded, -0.7%), keeps ``int4_cost`` 0 in every form; int8, finer, is charged
  ``int8_cost`` in every form too (its second quantization not measured). int2's sums
  re-quantized at every hop of a ring all-reduce were not measured: ``sync.py`` refuses that
  form. Whether int2's cost shrinks with model size, as DiLoCo's gap does, is not known.
- ``cost_per_doubling`` (0.05: 5% more tokens per doubling of H beyond ``free_inner_steps``) is
  an ASSUMPTION: no paper gives extra tokens per H in a form to take; vary it. Nor is the number
  of replicas in the formula (Charles et al. 2025, arXiv 2503.09799, find DiLoCo's loss grows
  with the replicas and its gap shrinks with model size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import check, check_finite

COSTS = ("base_cost", "cost_per_doubling", "int8_cost", "int4_cost", "int2_cost", "int2_reduce_scatter_cost",
         "topk_cost")


@dataclass(kw_only=True, slots=True)
class Quality:
    """Token overheads of low-communication training (module docstring), as fractions of the
    token budget."""

    free_inner_steps: int = 500  # DiLoCo: 8 workers at H = 500 match synchronous training
    cost_per_doubling: float = 0.05  # ASSUMPTION: extra tokens per doubling of H beyond free_inner_steps
    base_cost: float = 0.0  # any diloco/streaming run, at H <= free_inner_steps
    int8_cost: float = 0.0  # INTELLECT-1: int8 all-reduce, comparable performance
    int4_cost: float = 0.0  # Streaming DiLoCo: 4-bit outer gradients, similar quality
    int2_cost: float = 0.10  # tenacia's probes: int2 quantized once (the all-gather forms)
    int2_reduce_scatter_cost: float = 0.114  # tenacia's probes: int2 quantized twice (the reduce-scatter)
    topk_cost: float = 0.0  # SparseLoCo: top-k 1-3% with error feedback beats dense DiLoCo

    def __post_init__(self) -> None:
        check_finite(self)
        check(self.free_inner_steps >= 1, "free_inner_steps", self.free_inner_steps, "inner steps >= 1")
        for key in COSTS:
            check(getattr(self, key) >= 0, key, getattr(self, key), "a token overhead >= 0 (0.05: 5% more tokens)")


def compression_cost(compression: str, exchange: str, q: Quality) -> float:
    """Extra tokens, as a fraction of the budget, for sending ``compression`` through ``exchange``
    (``sync.EXCHANGES``); only int2's differs by form (module docstring)."""
    if compression == "int2":
        return q.int2_reduce_scatter_cost if exchange == "reduce_scatter" else q.int2_cost
    return {"fp32": 0.0, "int8": q.int8_cost, "int4": q.int4_cost}[compression]


def token_overhead(strategy: str, inner_steps: int, compression: str, exchange: str, topk: float,
                   q: Quality) -> float:
    """Extra tokens, as a fraction of the budget, that ``strategy`` needs for ddp's loss."""
    if strategy == "ddp":
        return 0.0
    cost = q.base_cost + q.cost_per_doubling * max(0.0, math.log2(inner_steps / q.free_inner_steps))
    cost += compression_cost(compression, exchange, q)
    return cost + (q.topk_cost if topk > 0 else 0.0)


def token_efficiency(strategy: str, inner_steps: int, compression: str, exchange: str, topk: float,
                     q: Quality) -> float:
    """Token budget / tokens needed for the same loss: 1 for ddp, at most 1 otherwise."""
    return 1.0 / (1.0 + token_overhead(strategy, inner_steps, compression, exchange, topk, q))
