"""The search for the fastest layout that fits: every field a ``Layout`` leaves open.

Candidates (a field given in the layout is fixed to its value):
- tp: powers of two within the smallest scale-up domain, dividing the heads;
- cp: powers of two up to 8 that keep at least ``MIN_CP_CHUNK`` tokens of a sequence per rank
  (ring attention below that is latency-bound);
- pp: powers of two up to the layers; ep: powers of two dividing the experts (MoE only);
- micro-batch: 1, 2, 4 sequences;
- schedule: 1F1B, interleaved with v = 2, 4, 8 or every layer of a stage its own chunk, ZB-H1,
  zero-bubble (ZB-H2), DualPipe (``layout.SCHEDULES``);
- recomputation: none, selective, full;
- ZeRO: the lowest stage that fits (a higher stage only adds communication);
- a layout with a ``year`` tries only the schedules, recomputation modes and context
  parallelism published by then (``layout.SINCE``).
Shapes (tp, cp, pp, ep, micro-batch) are visited in the order of a lower bound on their step
(``_step_bound``); once a shape's bound exceeds the best step found, no later shape can win and
the search stops. Within a shape, (schedule, recomputation) candidates are visited in the order
of their own bound (micro-batches + bubble at the micro-batch time with ZeRO-1), each at the
lowest ZeRO stage that fits, until a bound exceeds the best step. The result is the layout an
exhaustive search would find (the bounds never exceed a true step time); ties: the first.
Returns it with the number of layouts estimated (those cut by a bound are not counted).
"""

from __future__ import annotations

import dataclasses

from ..config import ConfigError
from .assumptions import Assumptions
from .catalog import Chip
from .estimate import TrainingEstimate, check_given, estimate_training
from .layout import RECOMPUTE, SCHEDULES, SINCE, ZERO, Layout, available, memory_per_chip
from .models import ModelSpec
from .training import microbatch_time

MIN_CP_CHUNK = 4096  # tokens of one sequence per context-parallel rank, at least
MICROBATCHES = (1, 2, 4)


def _powers_of_two(limit: int) -> list[int]:
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return out


def _schedules(layout: Layout, layers_per_stage: float) -> list[tuple[str, int]]:
    """(schedule, virtual stages) pairs to try."""
    names = available(SCHEDULES, layout.year) if layout.schedule == "auto" else (layout.schedule,)
    out = []
    for name in names:
        if name != "interleaved":
            out.append((name, 1))
        elif layout.virtual_stages:
            out.append((name, layout.virtual_stages))
        else:
            most = int(layers_per_stage)
            out += [(name, v) for v in sorted({*(v for v in (2, 4, 8) if v <= most), most}) if v > 1]
    return out


def _step_bound(model: ModelSpec, fleet: list[tuple[Chip, int, float]], layout: Layout, a: Assumptions,
                precision: str, global_batch_seqs: int, balance: str, **shape: int) -> float | None:
    """A lower bound on the step time of every layout with this shape (tp, cp, pp, ep,
    micro-batch): its micro-batches at the fastest micro-batch time (no recomputation, one chunk
    per stage, ZeRO-1), no bubble, no gradient reduction. None when the fleet or the batch
    cannot hold the shape, or when even its leanest layout (full recomputation, ZeRO-3, 1F1B)
    does not fit memory."""
    size = shape["tp"] * shape["cp"] * shape["pp"]
    replicas = [min(count // size, layout.dp) if layout.dp else count // size for _, count, _ in fleet]
    dp = sum(replicas)
    micro = global_batch_seqs / shape["microbatch_seqs"]
    if min(replicas) < 1 or micro < dp or any(r % shape["ep"] for r in replicas):
        return None
    leanest = dataclasses.replace(layout, **shape, dp=dp, schedule="1f1b", virtual_stages=1,
                                  recompute="full", zero=3)
    need = memory_per_chip(model, leanest, shape["tp"], shape["pp"], shape["ep"], dp,
                           a.optimizer_bytes_per_param, a.activation_memory_scale).total
    if any(need > chip.memory_gb * 1e9 * a.usable_memory for chip, _, _ in fleet):
        return None  # not even the leanest layout of this shape fits
    fastest = dataclasses.replace(leanest, recompute="none", zero=1)
    times = [microbatch_time(model, chip, fastest, shape["tp"], shape["pp"], shape["ep"], a, precision).total
             for chip, _, _ in fleet]
    if balance == "proportional":
        return micro / sum(r / t for r, t in zip(replicas, times, strict=True))
    return micro / dp * max(times)


def search_layout(model: ModelSpec, fleet: list[tuple[Chip, int, float]], layout: Layout,
                  a: Assumptions, precision: str, tokens: float, global_batch_seqs: int,
                  balance: str = "slowest") -> tuple[TrainingEstimate, int]:
    """The fastest layout that fits (module docstring). Raises ConfigError when none does."""
    check_given(model, layout)
    for chip, _, _ in fleet:
        chip.peak_flops(precision)  # a chip without this precision is an error, not a misfit
    domain = min(chip.scale_up_domain for chip, _, _ in fleet)
    tps = [layout.tp] if layout.tp else [t for t in _powers_of_two(domain) if model.heads % t == 0]
    cp_limit = 8 if not layout.year or SINCE["cp"] <= layout.year else 1
    cps = [layout.cp] if layout.cp else [c for c in _powers_of_two(cp_limit)
                                         if model.seq_len % c == 0 and model.seq_len // c >= min(MIN_CP_CHUNK, model.seq_len)]
    pps = [layout.pp] if layout.pp else _powers_of_two(model.layers)
    if not model.is_moe:
        eps = [1]
    else:
        eps = [layout.ep] if layout.ep else [e for e in _powers_of_two(model.experts) if model.experts % e == 0]
    mbs = [layout.microbatch_seqs] if layout.microbatch_seqs else list(MICROBATCHES)
    recomputes = available(RECOMPUTE, layout.year) if layout.recompute == "auto" else (layout.recompute,)
    zeros = ZERO[1:] if layout.zero is None else (layout.zero,)
    shapes = []  # (lower bound on the step, replicas, fixed dimensions) of every shape the fleet can hold
    for tp in tps:
        for cp in cps:
            for pp in pps:
                for ep in eps:
                    for mb in mbs:
                        shape = dict(tp=tp, cp=cp, pp=pp, ep=ep, microbatch_seqs=mb)
                        bound = _step_bound(model, fleet, layout, a, precision, global_batch_seqs, balance, **shape)
                        if bound is not None:
                            shapes.append((bound, tp, cp, pp, ep, mb))
    shapes.sort()
    best, fits = None, 0
    for bound, tp, cp, pp, ep, mb in shapes:
        if best is not None and bound >= best.step_time_s:
            break  # no later shape can beat the best: their bounds are higher still
        dp = sum(min(n // (tp * cp * pp), layout.dp) if layout.dp else n // (tp * cp * pp) for _, n, _ in fleet)
        trial = dataclasses.replace(layout, tp=tp, cp=cp, pp=pp, ep=ep, microbatch_seqs=mb, dp=dp,
                                    schedule="1f1b", virtual_stages=1, recompute="none", zero=1)
        per_replica = global_batch_seqs / mb / dp
        candidates = []  # (lower bound, schedule, v, recompute): micro-batches + bubble at this recomputation
        for recompute in recomputes:
            trial.recompute = recompute
            t = max(microbatch_time(model, chip, trial, tp, pp, ep, a, precision).total for chip, _, _ in fleet)
            for schedule, v in _schedules(layout, model.layers / pp):
                trial.schedule, trial.virtual_stages = schedule, v
                candidates.append(((per_replica + trial.bubble_microbatches(pp)) * t, schedule, v, recompute))
        candidates.sort()
        for cand_bound, schedule, v, recompute in candidates:
            if best is not None and cand_bound >= best.step_time_s:
                break
            for zero in zeros:
                # set in place: every value comes from the checked candidate lists
                trial.schedule, trial.virtual_stages, trial.recompute, trial.zero = schedule, v, recompute, zero
                need = memory_per_chip(model, trial, tp, pp, ep, dp, a.optimizer_bytes_per_param,
                                       a.activation_memory_scale).total
                if any(need > chip.memory_gb * 1e9 * a.usable_memory for chip, _, _ in fleet):
                    continue  # try the next ZeRO stage
                try:
                    est = estimate_training(model, fleet, dataclasses.replace(trial, dp=layout.dp), a,
                                            precision, tokens, global_batch_seqs, balance)
                except ConfigError:
                    break  # fits memory but not the batch or the fleet: no ZeRO stage helps
                fits += 1
                if best is None or est.step_time_s < best.step_time_s * (1 - 1e-9):
                    best = est
                break  # the lowest ZeRO stage that fits
    if best is None:
        raise ConfigError("layout", "search",
                          f"a layout that fits: none of tp in {tps}, cp in {cps}, pp in {pps}, ep in {eps}, "
                          f"micro-batches of {mbs} with ZeRO {list(zeros)} and recomputation {list(recomputes)} "
                          "fits memory and the batch; add chips or memory, or give a smaller layout.microbatch_seqs")
    return best, fits
