"""A training run on a whole (possibly mixed) fleet, for one explicit layout: step time, days,
chip-hours, cost, energy, MFU and hardware FLOPs utilization. ``search.py`` finds the layout.

Chip types never share a tensor, pipeline or expert group: each type forms its own replicas of
the same layout, and all replicas meet in the data-parallel gradient reduction. How a step's
micro-batches are split between types is ``FleetSpec.balance``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import check
from .assumptions import Assumptions
from .catalog import Chip
from .layout import Layout, MemoryUse, memory_per_chip
from .models import ModelSpec
from .training import (
    MicroBatch,
    check_fits,
    grad_sync_time,
    hardware_flops_per_token,
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
    hfu_bf16: float  # executed FLOPs (recomputation and flash attention's backward included)
    mfu_precision: float | None  # against the FP8 peak when precision is fp8

    @property
    def ideal_days(self) -> float:
        return self.ideal_s / 86400

    def summary(self) -> dict:
        lay = self.layout
        return {
            "precision": self.precision,
            "layout": {"tp": lay.tp, "cp": lay.cp, "pp": lay.pp, "ep": lay.ep, "dp": lay.dp,
                       "microbatch_seqs": lay.microbatch_seqs, "schedule": lay.schedule,
                       "virtual_stages": lay.chunks, "zero": lay.zero, "recompute": lay.recompute},
            "groups": [{"chip": g.chip.key, "bf16_tflops": g.chip.bf16_tflops, "chips": g.chips, "replicas": g.replicas, "idle": g.idle,
                        "microbatch_s": g.micro.total, "matmul_s": g.micro.matmul,
                        "attention_s": g.micro.attention, "memory_s": g.micro.memory,
                        "tp_s": g.micro.tp, "ep_s": g.micro.ep, "pp_s": g.micro.pp, "cp_s": g.micro.cp,
                        "zero_s": g.micro.zero, "zero_exposed_s": g.micro.zero_exposed,
                        "grad_sync_s": g.grad_sync_s, "optimizer_s": g.optimizer_s,
                        "memory_gb": g.memory.total / 1e9} for g in self.groups],
            "step_time_s": self.step_time_s, "tokens": self.tokens, "steps": self.steps,
            "tokens_per_s": self.tokens_per_s, "ideal_days": self.ideal_days, "chips": self.chips,
            "chip_hours": self.chip_hours, "cost": self.cost, "energy_mwh": self.energy_mwh,
            "mfu_bf16": self.mfu_bf16, "hfu_bf16": self.hfu_bf16, "mfu_precision": self.mfu_precision,
            "mfu_peak": "dense BF16 peak of every chip in the fleet (catalog bf16_tflops)",
        }


def check_given(model: ModelSpec, layout: Layout) -> None:
    """Raise ConfigError naming the field when a given (non-search) layout field cannot suit
    ``model``: tp must divide the heads, cp the sequence, ep the experts; pp at most the layers;
    virtual stages at most the layers of a stage."""
    tp, cp, pp, ep = layout.tp, layout.cp, layout.pp, layout.ep
    check(not tp or model.heads % tp == 0, "layout.tp", tp, f"a divisor of the model's heads={model.heads}")
    check(not cp or model.seq_len % cp == 0, "layout.cp", cp, f"a divisor of the sequence length {model.seq_len}")
    check(pp <= model.layers, "layout.pp", pp, f"at most the model's layers={model.layers}")
    check(not pp or layout.chunks <= model.layers / pp, "layout.virtual_stages", layout.virtual_stages,
          f"at most the {model.layers / max(pp, 1):g} layers per stage (stages may differ by a layer)")
    check(not ep or model.is_moe or ep == 1, "layout.ep", ep, "1 for a dense model")
    check(not ep or not model.is_moe or model.experts % ep == 0, "layout.ep", ep,
          f"a divisor of the model's experts={model.experts}")


def estimate_training(model: ModelSpec, fleet: list[tuple[Chip, int, float]], layout: Layout,
                      a: Assumptions, precision: str, tokens: float, global_batch_seqs: int,
                      balance: str = "slowest") -> TrainingEstimate:
    """Failure-free estimate for an explicit layout (``not layout.searched``). Raises ConfigError
    when it does not fit memory or the fleet/batch cannot hold it."""
    tp, cp, pp, ep = layout.tp, layout.cp, layout.pp, layout.ep
    check(not layout.searched, "layout", layout, "every field set here; 0/'auto'/None mean search")
    check_given(model, layout)
    check(layout.dp == 0 or len(fleet) == 1, "layout.dp", layout.dp, "0 (fill the fleet) for a mixed fleet")
    replicas = []
    size = tp * cp * pp  # chips per replica
    for chip, count, _ in fleet:
        r = count // size
        if layout.dp:
            check(layout.dp <= r, "layout.dp", layout.dp, f"at most {r} replicas of tp*cp*pp={size} on {count} {chip.key}")
            r = layout.dp
        check(r >= 1 and r % ep == 0, "layout.ep", ep,
              f"a divisor of the {r} replicas that {count} {chip.key} make with tp*cp*pp={size}")
        replicas.append(r)
    dp = sum(replicas)
    micro_total = global_batch_seqs / layout.microbatch_seqs
    check(micro_total >= dp, "plan.global_batch_seqs", global_batch_seqs,
          f"at least dp * microbatch_seqs = {dp * layout.microbatch_seqs} sequences: every replica needs a "
          "micro-batch (lower layout.dp or raise the batch)")
    check(layout.chunks == 1 or micro_total / dp >= pp, "layout.virtual_stages", layout.virtual_stages,
          f"1: the interleaved schedule needs at least pp={pp} micro-batches per replica, "
          f"this batch gives {micro_total / dp:g}")
    resolved = dataclasses.replace(layout, dp=dp)
    shards = dp * cp  # chips holding the same weights
    groups = []
    for (chip, count, price), r in zip(fleet, replicas, strict=True):
        check_fits(model, chip, resolved, tp, pp, ep, dp, a)
        micro = microbatch_time(model, chip, resolved, tp, pp, ep, a, precision)
        groups.append(GroupPlan(
            chip=chip, chips=count, replicas=r, idle=count - r * size, price_per_hour=price,
            micro=micro,
            memory=memory_per_chip(model, resolved, tp, pp, ep, dp, a.optimizer_bytes_per_param,
                                   a.activation_memory_scale),
            grad_sync_s=grad_sync_time(model, chip, resolved, tp, pp, ep, dp, micro, a),
            optimizer_s=optimizer_time(model, chip, tp, pp, ep, shards, layout.zero, a)))
    slowest = max(groups, key=lambda g: g.micro.total).micro  # its F and W set the zero-bubble schedules' bubble
    bubble = layout.bubble_microbatches(pp, slowest.forward, slowest.weight_grad)
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
    hardware_flops = hardware_flops_per_token(model, layout.recompute) * tokens_per_s
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
        mfu_bf16=model_flops / bf16_peak, hfu_bf16=hardware_flops / bf16_peak,
        mfu_precision=model_flops / fp8_peak if fp8_peak else None)
