"""Serving: the decode batch that meets a time-per-output-token target, the throughput-versus-TPOT
curve, prefill throughput, and the chips a demand needs. What one step costs is
``serving_step.py``'s, what a plan says ``serve_plan.py``'s; this module chooses instances and batches.

A decode instance is ``tp`` chips holding one copy of the weights. A dense model is split
tensor-parallel. An MoE model runs as DeepSeek serves V3: attention and other dense weights
replicated on every chip, each chip decoding its own B/tp sequences, routed experts spread over
the chips (EP = tp), one all-to-all dispatch + combine per MoE layer; or, with
``attention_parallel = 'tensor'``, split tensor-parallel as a dense model is (``serving_step.py``).

The batch is the one with the most tokens/s per chip among those whose step meets the target
and whose KV cache fits; as the target tightens the batch shrinks and throughput falls
(``decode_curve``), since the weight reads and fixed costs are paid per step whatever the batch.
Prefill and decode run on separate chips (``deployment = 'disaggregated'``), or on the same ones,
prompts prefilled in chunks inside the decode steps (``'aggregated'``, ``aggregated.py``: the
step is then the mean over steps with and without a chunk, and no separate prefill chips are
counted); a prefix-cache hit skips the prefill of that share of input tokens. Precision names the weight format: bf16, fp8 or int8
(weights and their reads in one byte; matmuls at that precision's peak, INT8 at the BF16 one
where the catalog has no INT8 figure). Time to first token is one prompt's steps (prefill on its own chips, or its chunks), queueing not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ConfigError, check
from .aggregated import serving_parts, tpot_s
from .catalog import Chip
from .efficiency import TILE
from .ep_latency import floor_row
from .models import ModelSpec
from .serve_plan import ServePlan
from .serving_step import (
    alltoall_floor_s,
    fixed_s,
    kv_copies,
    prefill_tps_per_chip,
    weight_bytes_per_chip,
)

CURVE_MS = (10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0)


@dataclass(kw_only=True, slots=True, frozen=True)
class ServeEstimate:
    chip: str
    tp: int
    batch: int
    step_s: float  # time per output token at that batch (the step / speculation.accepted)
    decode_tps_per_chip: float
    prefill_tps_per_chip: float  # computed (uncached) prompt tokens per prefill chip-second
    prefill_input_tps_per_chip: float  # prompt tokens per prefill chip-second, prefix-cache hits included
    max_batch_memory: int  # sequences whose full context fits the instance's free memory
    prefill_chips: int  # 0 when aggregated: the decode chips prefill too
    decode_chips: int
    chips: int
    cost_per_day: float
    cost_per_million_tokens: float
    ttft_s: float  # one prompt's prefill: its step on a prefill chip, or its chunks' steps when aggregated
    curve: list[dict]  # decode tokens/s per chip at each TPOT target of CURVE_MS (0: unreachable)
    step_parts: dict  # the chosen step by operator (aggregated.serving_parts)

    def summary(self) -> dict:
        return {f.name: getattr(self, f.name) for f in self.__dataclass_fields__.values()}


def _instance_sizes(plan: ServePlan) -> list[int]:
    """The decode instance sizes tried: ``plan.tp``, or the powers of two to 1,024."""
    return [plan.tp] if plan.tp else [2 ** i for i in range(11)]


def _memory_batch(plan: ServePlan, chip: Chip, tp: int) -> int:
    """Sequences whose full context's KV cache (``kv_copies`` of it) fits a ``tp``-chip instance
    beside its weights."""
    m, d = plan.model, plan.demand
    kv_per_seq = (d.input_len + d.output_len) * m.kv_elements_per_token * plan.kv_bytes * kv_copies(m, plan, tp)
    free = tp * (chip.memory_gb * 1e9 * plan.assumptions.usable_memory - weight_bytes_per_chip(m, tp, plan.precision, plan.attention_parallel))
    return int(free // kv_per_seq) if free > 0 else 0


def _largest_batch(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, limit: int, target: float) -> int:
    """Largest batch <= limit whose step meets ``target`` seconds (0 if even one does not)."""
    if limit < 1 or tpot_s(m, chip, plan, tp, 1) > target:
        return 0
    lo, hi = 1, limit
    while lo < hi:  # step time grows with the batch
        mid = (lo + hi + 1) // 2
        if tpot_s(m, chip, plan, tp, mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def best_decode(plan: ServePlan, chip: Chip, target_s: float) -> tuple[int, int, float, int] | None:
    """(tp, batch, step seconds, memory's batch limit) with the most decode tokens/s per chip at
    ``target_s``, over the instance sizes tried (``plan.tp`` or powers of two) and the batches
    that meet it; None if none. A looser target only adds candidates: throughput never falls."""
    m = plan.model
    best, best_rate = None, 0.0
    for tp in _instance_sizes(plan):
        max_mem = _memory_batch(plan, chip, tp)
        largest = _largest_batch(m, chip, plan, tp, min(max_mem, plan.max_batch), target_s)
        if largest == 0:
            continue
        # throughput is not monotone in the batch (a batch just past a whole GEMM tile pays for a
        # padded one): try the largest batch, every batch that fills whole tiles below it (a GEMM
        # gets batch x draft_tokens rows, / tp on an MoE instance), and a geometric ladder
        unit = max(1, (tp if m.is_moe else 1) * TILE // plan.speculation.draft_tokens)
        tiles = range(unit, largest, max(unit, largest // 64 // unit * unit))
        ladder = {largest, *tiles, *(max(1, round(largest / 1.25 ** i)) for i in range(32))}
        for batch in sorted(ladder):
            step = tpot_s(m, chip, plan, tp, batch)
            if batch / step / tp > best_rate:
                best, best_rate = (tp, batch, step, max_mem), batch / step / tp
    return best


def _unreachable(plan: ServePlan, chip: Chip, tried: str) -> str:
    """Why no instance meets ``plan.tpot_ms`` although the fixed cost alone does: the fastest
    one sequence decodes on an instance that holds the weights and its KV cache, or that none does."""
    m = plan.model
    fastest = None
    for tp in _instance_sizes(plan):
        if _memory_batch(plan, chip, tp) < 1:
            continue
        one = serving_parts(m, chip, plan, tp, 1)
        if fastest is None or one["tpot_s"] < fastest[1]["tpot_s"]:
            fastest = (tp, one)
    if fastest is None:
        return (f"a target {chip.key} can meet for {m.total_params_b:g}B parameters with tp={tried}: no instance holds "
                "the weights plus one sequence's KV cache; raise tp, or use precision='fp8'")
    tp, one = fastest
    return (f"more than one sequence alone takes on {chip.key}: {one['tpot_s'] * 1000:.1f} ms a token at the "
            f"fastest, on tp={tp} (a step of {one['step_s'] * 1000:.1f} ms / {plan.speculation.accepted:g} tokens "
            f"accepted: fixed costs {one['fixed_s'] * 1000:.1f} ms, attention {one['attention_s'] * 1000:.2f}, dense "
            f"{one['dense_s'] * 1000:.2f}{', experts %.2f' % (one['experts_s'] * 1000) if 'experts_s' in one else ''}, "
            f"all-to-all or all-reduce {one['comm_s'] * 1000:.2f}, drafts {one['draft_s'] * 1000:.2f} ms); raise tpot_ms")


def decode_curve(plan: ServePlan, chip: Chip, targets_ms: tuple[float, ...] = CURVE_MS) -> list[dict]:
    """Decode tokens/s per chip at each TPOT target (0 where no instance meets it)."""
    out = []
    for ms in targets_ms:
        best = best_decode(plan, chip, ms / 1000)
        rate = best[1] / best[2] / best[0] if best else 0.0
        out.append({"tpot_ms": ms, "decode_tps_per_chip": rate, "tp": best[0] if best else 0,
                    "batch": best[1] if best else 0})
    return out


def estimate_serving(plan: ServePlan, chip: Chip) -> ServeEstimate:
    m, d = plan.model, plan.demand
    check(plan.attention_precision != "fp8" or chip.fp8_tflops is not None, "attention_precision",
          plan.attention_precision, f"'bf16': the catalog has no FP8 throughput for {chip.key} ({chip.name})")
    best = best_decode(plan, chip, plan.tpot_ms / 1000)
    if best is None:
        tried = plan.tp or "1..1024"
        # the smallest instance's fixed cost: no instance pays less
        smallest = plan.tp or 1
        fixed_ms = fixed_s(m, chip, plan.step, smallest) * 1000 / plan.speculation.accepted
        if fixed_ms >= plan.tpot_ms:
            moe = m.moe_layers if m.is_moe and smallest > 1 else 0
            floor = alltoall_floor_s(m, chip, smallest) * 1000
            raise ConfigError("tpot_ms", plan.tpot_ms,
                              f"more than the step's fixed cost alone on {smallest} chips: {fixed_ms:.1f} ms a token "
                              f"(step.step_overhead_us={plan.step.step_overhead_us:g}, "
                              f"{m.layers} layers x step.layer_overhead_us={plan.step.layer_overhead_us:g}"
                              f"{f' + step.mla_layer_us={plan.step.mla_layer_us:g}' if m.is_mla else ''}, "
                              f"{m.moe_layers if m.is_moe else 0} MoE layers x step.moe_layer_kernel_us={plan.step.moe_layer_kernel_us:g}, "
                              f"{moe} MoE layers x step.moe_layer_overhead_us={plan.step.moe_layer_overhead_us:g}, "
                              f"the all-to-all's published latency floor {floor:.1f} ms, "
                              f"{floor_row(chip.key, chip.scale_up_domain, smallest)}: ep_latency.py; "
                              f"a step of {fixed_ms * plan.speculation.accepted:.1f} ms / "
                              f"{plan.speculation.accepted:g} tokens accepted)")
        raise ConfigError("tpot_ms", plan.tpot_ms, _unreachable(plan, chip, str(tried)))
    tp, batch, step, max_mem = best
    prefill_per_chip = prefill_tps_per_chip(m, chip, plan, tp)
    rps = d.peak_rps
    aggregated = plan.deployment == "aggregated"
    prefill_chips = 0 if aggregated else math.ceil(rps * d.input_len * (1 - d.cache_hit_rate) / prefill_per_chip)
    parts = serving_parts(m, chip, plan, tp, batch)
    decode_chips = math.ceil(rps * d.output_len / (batch / step)) * tp
    chips = prefill_chips + decode_chips
    cost = chips * chip.price_per_hour * 24
    return ServeEstimate(chip=chip.key, tp=tp, batch=batch, step_s=step, decode_tps_per_chip=batch / step / tp,
                         prefill_tps_per_chip=prefill_per_chip,
                         prefill_input_tps_per_chip=prefill_per_chip / (1 - d.cache_hit_rate),
                         max_batch_memory=max_mem, prefill_chips=prefill_chips, decode_chips=decode_chips,
                         chips=chips, cost_per_day=cost, cost_per_million_tokens=cost / d.tokens_per_day * 1e6,
                         ttft_s=parts["ttft_s"] if aggregated else d.input_len / prefill_per_chip,
                         curve=decode_curve(plan, chip), step_parts=parts)
