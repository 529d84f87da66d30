"""A training run on a whole (possibly mixed) fleet: step time, days, chip-hours, cost, energy,
MFU; and the search for the fastest layout that fits memory.

Chip types never share a tensor, pipeline or expert group: each type forms its own replicas of
the same layout, and all replicas meet in the data-parallel gradient reduction. How a step's
micro-batches are split between types is ``FleetSpec.balance``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import ConfigError, check
from .assumptions import Assumptions
from .catalog import Chip
from .layout import Layout, MemoryUse, memory_per_chip
from .models import ModelSpec
from .training import (
    MicroBatch,
    check_fits,
    grad_sync_time,
    microbatch_time,
    model_flops_per_token,
    optimizer_time,
)


@dataclass(kw_only=True, slots=True, frozen=True)
class GroupPlan:
    chip: Chip
    chips: int
    replicas: int
    idle: int  # chips left over when the count is not a multiple of tp * pp (or dp is capped)
    price_per_hour: float
    micro: MicroBatch
    memory: MemoryUse
    grad_sync_s: float
    optimizer_s: float


@dataclass(kw_only=True, slots=True, frozen=True)
class TrainingEstimate:
    """A failure-free run. Times in seconds; MFU against the dense BF16 peak of all chips."""

    precision: str
    layout: Layout  # resolved: tp, pp, ep, dp all set
    groups: list[GroupPlan]
    microbatches_per_step: float  # across all replicas
    bubble: float  # in micro-batch times
    step_time_s: float
    tokens_per_step: float
    steps: float
    tokens: float
    tokens_per_s: float
    ideal_s: float
    chips: int
    chip_hours: float
    cost: float
    energy_mwh: float
    mfu_bf16: float
    mfu_precision: float | None  # against the FP8 peak when precision is fp8

    @property
    def ideal_days(self) -> float:
        return self.ideal_s / 86400

    def summary(self) -> dict:
        lay = self.layout
        return {
            "precision": self.precision,
            "layout": {"tp": lay.tp, "pp": lay.pp, "ep": lay.ep, "dp": lay.dp,
                       "microbatch_seqs": lay.microbatch_seqs, "schedule": lay.schedule,
                       "zero": lay.zero, "recompute": lay.recompute},
            "groups": [{"chip": g.chip.key, "bf16_tflops": g.chip.bf16_tflops, "chips": g.chips, "replicas": g.replicas, "idle": g.idle,
                        "microbatch_s": g.micro.total, "matmul_s": g.micro.matmul,
                        "attention_s": g.micro.attention, "memory_s": g.micro.memory,
                        "tp_s": g.micro.tp, "ep_s": g.micro.ep, "pp_s": g.micro.pp,
                        "grad_sync_s": g.grad_sync_s, "optimizer_s": g.optimizer_s,
                        "memory_gb": g.memory.total / 1e9} for g in self.groups],
            "step_time_s": self.step_time_s, "tokens": self.tokens, "steps": self.steps,
            "tokens_per_s": self.tokens_per_s, "ideal_days": self.ideal_days, "chips": self.chips,
            "chip_hours": self.chip_hours, "cost": self.cost, "energy_mwh": self.energy_mwh,
            "mfu_bf16": self.mfu_bf16, "mfu_precision": self.mfu_precision,
            "mfu_peak": "dense BF16 peak of every chip in the fleet (catalog bf16_tflops)",
        }


def estimate_training(model: ModelSpec, fleet: list[tuple[Chip, int, float]], layout: Layout,
                      a: Assumptions, precision: str, tokens: float, global_batch_seqs: int,
                      balance: str = "slowest") -> TrainingEstimate:
    """Failure-free estimate for an explicit layout (tp, pp, ep > 0). Raises ConfigError when it
    does not fit memory or the fleet/batch cannot hold it."""
    tp, pp, ep = layout.tp, layout.pp, layout.ep
    check(min(tp, pp, ep) > 0, "layout", f"tp={tp} pp={pp} ep={ep}", "all set (> 0) here; 0 means search")
    check(model.heads % tp == 0, "layout.tp", tp, f"a divisor of the model's heads={model.heads}")
    check(pp <= model.layers, "layout.pp", pp, f"at most the model's layers={model.layers}")
    check(model.is_moe or ep == 1, "layout.ep", ep, "1 for a dense model")
    check(not model.is_moe or model.experts % ep == 0, "layout.ep", ep,
          f"a divisor of the model's experts={model.experts}")
    check(layout.dp == 0 or len(fleet) == 1, "layout.dp", layout.dp, "0 (fill the fleet) for a mixed fleet")
    replicas = []
    for chip, count, _ in fleet:
        r = count // (tp * pp)
        if layout.dp:
            check(layout.dp <= r, "layout.dp", layout.dp, f"at most {r} replicas of tp*pp={tp * pp} on {count} {chip.key}")
            r = layout.dp
        check(r >= 1 and r % ep == 0, "layout.ep", ep,
              f"a divisor of the {r} replicas that {count} {chip.key} make with tp*pp={tp * pp}")
        replicas.append(r)
    dp = sum(replicas)
    micro_total = global_batch_seqs / layout.microbatch_seqs
    check(micro_total >= dp, "plan.global_batch_seqs", global_batch_seqs,
          f"at least dp * microbatch_seqs = {dp * layout.microbatch_seqs} sequences: every replica needs a "
          "micro-batch (lower layout.dp or raise the batch)")
    resolved = dataclasses.replace(layout, dp=dp)
    groups = []
    for (chip, count, price), r in zip(fleet, replicas, strict=True):
        check_fits(model, chip, resolved, tp, pp, ep, dp, a)
        groups.append(GroupPlan(
            chip=chip, chips=count, replicas=r, idle=count - r * tp * pp, price_per_hour=price,
            micro=microbatch_time(model, chip, resolved, tp, pp, ep, a, precision),
            memory=memory_per_chip(model, resolved, tp, pp, ep, dp, a.optimizer_bytes_per_param,
                                   a.activation_memory_scale),
            grad_sync_s=grad_sync_time(model, chip, tp, pp, ep, dp, True, a),
            optimizer_s=optimizer_time(model, chip, tp, pp, ep, dp, layout.zero, a)))
    bubble = layout.bubble_microbatches(pp)
    if balance == "proportional":
        pipe = (micro_total + dp * bubble) / sum(g.replicas / g.micro.total for g in groups)
    else:
        pipe = (micro_total / dp + bubble) * max(g.micro.total for g in groups)
    step = pipe + max(g.grad_sync_s for g in groups) + max(g.optimizer_s for g in groups)
    tokens_per_step = global_batch_seqs * model.seq_len
    steps = tokens / tokens_per_step
    ideal_s = steps * step
    hours = ideal_s / 3600
    chips = sum(count for _, count, _ in fleet)
    tokens_per_s = tokens_per_step / step
    model_flops = model_flops_per_token(model) * tokens_per_s
    bf16_peak = sum(count * chip.peak_flops("bf16") for chip, count, _ in fleet)
    fp8_peak = None
    if precision == "fp8":
        fp8_peak = sum(count * chip.peak_flops("fp8") for chip, count, _ in fleet)
    return TrainingEstimate(
        precision=precision, layout=resolved, groups=groups, microbatches_per_step=micro_total,
        bubble=bubble, step_time_s=step, tokens_per_step=tokens_per_step, steps=steps,
        tokens=tokens, tokens_per_s=tokens_per_s, ideal_s=ideal_s, chips=chips,
        chip_hours=chips * hours, cost=sum(count * price for _, count, price in fleet) * hours,
        energy_mwh=sum(count * chip.power_w for chip, count, _ in fleet) * a.power_fraction * a.pue * hours / 1e6,
        mfu_bf16=model_flops / bf16_peak, mfu_precision=model_flops / fp8_peak if fp8_peak else None)


def _powers_of_two(limit: int) -> list[int]:
    out, v = [], 1
    while v <= limit:
        out.append(v)
        v *= 2
    return out


def search_layout(model: ModelSpec, fleet: list[tuple[Chip, int, float]], layout: Layout,
                  a: Assumptions, precision: str, tokens: float, global_batch_seqs: int,
                  balance: str = "slowest") -> tuple[TrainingEstimate, int]:
    """The fastest layout that fits: tp, pp, ep each a power of two where the given layout has 0
    (tp within the smallest scale-up domain, ep a divisor of the experts), with ZeRO stage and
    recomputation tried at the given setting and at the memory-saving one. Returns the best
    estimate and how many layouts fit."""
    for chip, _, _ in fleet:
        chip.peak_flops(precision)  # a chip without this precision is an error, not a misfit
    domain = min(chip.scale_up_domain for chip, _, _ in fleet)
    tps = [layout.tp] if layout.tp else [t for t in _powers_of_two(domain) if model.heads % t == 0]
    pps = [layout.pp] if layout.pp else _powers_of_two(model.layers)
    if not model.is_moe:
        eps = [1]
    else:
        eps = [layout.ep] if layout.ep else [e for e in _powers_of_two(model.experts) if model.experts % e == 0]
    best, fits = None, 0
    for zero in sorted({layout.zero, 2}):
        for recompute in dict.fromkeys((layout.recompute, "full")):
            for tp in tps:
                for pp in pps:
                    for ep in eps:
                        trial = dataclasses.replace(layout, tp=tp, pp=pp, ep=ep, zero=zero, recompute=recompute)
                        try:
                            est = estimate_training(model, fleet, trial, a, precision, tokens,
                                                    global_batch_seqs, balance)
                        except ConfigError:
                            continue
                        fits += 1
                        if best is None or est.step_time_s < best.step_time_s * (1 - 1e-9):
                            best = est
    if best is None:
        raise ConfigError("layout", "search",
                          f"a layout that fits: none of tp in {tps}, pp in {pps}, ep in {eps} with ZeRO "
                          "1-2 and recomputation fits memory and the batch; add chips or memory, or "
                          "lower layout.microbatch_seqs")
    return best, fits
