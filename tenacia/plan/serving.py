"""Serving: prefill and decode throughput per chip, the batch that meets a time-per-output-token
target, and the chips a demand needs.

A decode instance is ``tp`` chips holding one copy of the weights. A dense model is split
tensor-parallel (two all-reduces of the batch's hidden states per layer). An MoE model runs as
DeepSeek serves V3: attention and other dense weights replicated on every chip, each chip
decoding its own B/tp sequences, routed experts spread over the chips, and one all-to-all
dispatch + combine per MoE layer. One decode step of a batch of B sequences takes

    max(matmul FLOPs / compute, (weights read + KV cache read) / HBM bandwidth, hidden comm)
    + exposed comm

(compute and memory traffic overlap: a roofline; ``tp_overlap``/``ep_overlap`` of the
assumptions hide communication), where an MoE step reads only the experts its B tokens touch:
E * (1 - (1 - k/E)^B) per layer. Prefill is compute-bound. Prefill and decode run on separate
chips (disaggregated serving); a prefix-cache hit skips the prefill of that share of input
tokens. Time to first token and queueing are not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import ConfigError, check, check_choice, check_finite
from .assumptions import Assumptions
from .catalog import Chip
from .models import ModelSpec

WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0}


@dataclass(kw_only=True, slots=True)
class Demand:
    tokens_per_day: float = 1e11  # input + output tokens served per day
    input_len: int = 2000  # tokens per request prompt
    output_len: int = 500  # tokens generated per request
    cache_hit_rate: float = 0.5  # share of input tokens found in the prefix cache
    peak_factor: float = 2.0  # peak request rate / mean request rate
    peak_requests_per_s: float = 0.0  # when > 0, the peak rate itself (peak_factor is ignored)

    def __post_init__(self) -> None:
        check_finite(self)
        check(self.tokens_per_day > 0, "tokens_per_day", self.tokens_per_day, "a positive number")
        check(self.input_len > 0, "input_len", self.input_len, "a positive integer")
        check(self.output_len > 0, "output_len", self.output_len, "a positive integer")
        check(0 <= self.cache_hit_rate < 1, "cache_hit_rate", self.cache_hit_rate, "a fraction in [0, 1)")
        check(self.peak_factor >= 1, "peak_factor", self.peak_factor, "a number >= 1")
        check(self.peak_requests_per_s >= 0, "peak_requests_per_s", self.peak_requests_per_s, "a number >= 0")

    @property
    def peak_rps(self) -> float:
        mean = self.tokens_per_day / (self.input_len + self.output_len) / 86400
        return self.peak_requests_per_s or mean * self.peak_factor


@dataclass(kw_only=True, slots=True)
class ServePlan:
    model: ModelSpec = field(default_factory=ModelSpec)
    chip: str = "h800"
    precision: str = "fp8"  # weights and matmuls; attention and the KV cache as kv_bytes says
    kv_bytes: float = 0.0  # bytes per cached element; 0: 1 for fp8, 2 for bf16
    tp: int = 0  # chips per decode instance; 0: the power of two with most tokens/s per chip
    tpot_ms: float = 50.0  # time-per-output-token target
    max_batch: int = 65536  # largest decode batch considered (per instance)
    demand: Demand = field(default_factory=Demand)
    assumptions: Assumptions = field(default_factory=Assumptions)
    catalog: str = ""

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("precision", self.precision, tuple(WEIGHT_BYTES))
        check(self.kv_bytes >= 0, "kv_bytes", self.kv_bytes, "bytes >= 0 (0: by precision)")
        check(self.tp >= 0, "tp", self.tp, "chips >= 0 (0: search)")
        check(self.tpot_ms > 0, "tpot_ms", self.tpot_ms, "milliseconds > 0")
        check(self.max_batch > 0, "max_batch", self.max_batch, "a positive integer")
        self.kv_bytes = self.kv_bytes or WEIGHT_BYTES[self.precision]


@dataclass(kw_only=True, slots=True, frozen=True)
class ServeEstimate:
    chip: str
    tp: int
    batch: int
    step_s: float  # decode step at that batch (= time per output token)
    decode_tps_per_chip: float
    prefill_tps_per_chip: float
    max_batch_memory: int  # sequences whose full context fits the instance's free memory
    prefill_chips: int
    decode_chips: int
    chips: int
    cost_per_day: float
    cost_per_million_tokens: float

    prefill_input_tps_per_chip: float  # input tokens per prefill chip-second, prefix-cache hits included

    def summary(self) -> dict:
        return {f.name: getattr(self, f.name) for f in self.__dataclass_fields__.values()}


def _speed(chip: Chip, precision: str, a: Assumptions) -> float:
    speed = chip.peak_flops("bf16") * a.compute_efficiency
    if precision == "fp8":
        speed *= min(a.fp8_speedup, chip.peak_flops("fp8") / chip.peak_flops("bf16"))
    return speed


def _link(chip: Chip, chips: int, a: Assumptions) -> tuple[float, float]:
    scale_up = chips <= chip.scale_up_domain
    bw = (chip.scale_up_gbs if scale_up else chip.scale_out_gbs) * 1e9 * a.comm_efficiency
    lat = (chip.scale_up_latency_us if scale_up else chip.scale_out_latency_us) * 1e-6
    return bw, lat


def weight_bytes_per_chip(m: ModelSpec, tp: int, precision: str) -> float:
    """Resident weights on one chip of a ``tp``-chip instance."""
    wb = WEIGHT_BYTES[precision]
    if m.is_moe:  # dense weights replicated, routed experts spread
        return (m.dense_params_b + m.expert_params_b / tp) * 1e9 * wb
    return m.total_params_b * 1e9 * wb / tp


def decode_step_s(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, batch: int) -> float:
    """One decode step of ``batch`` sequences on a ``tp``-chip instance, context at its mean
    (prompt + half the output)."""
    a, wb = plan.assumptions, WEIGHT_BYTES[plan.precision]
    context = plan.demand.input_len + plan.demand.output_len / 2
    params = m.matmul_params - m.extra_activated_params_b * 1e9  # MTP modules do not serve
    attn = m.attention_flops_fwd(context)
    compute = batch * (2 * params / _speed(chip, plan.precision, a)
                       + attn / (chip.peak_flops("bf16") * a.compute_efficiency)) / tp
    kv = batch * context * m.kv_elements_per_token * plan.kv_bytes / tp
    bw, lat = _link(chip, tp, a)
    if m.is_moe:
        touched = m.experts * -math.expm1(batch * math.log1p(-m.experts_per_token / m.experts))
        weights = (m.dense_params_b * 1e9 + m.moe_layers * touched * 3 * m.hidden * m.expert_ffn / tp) * wb
        copies = m.experts_per_token * (tp - 1) / tp  # token copies leaving their chip
        per_layer = batch / tp * copies * m.hidden * (wb + 2) / bw + 2 * lat  # dispatch + BF16 combine
        comm, overlap = m.moe_layers * per_layer if tp > 1 else 0.0, a.ep_overlap
    else:
        weights = m.total_params_b * 1e9 * wb / tp
        per = 2 * (tp - 1) / tp * batch * m.hidden * 2 / bw + 2 * math.log2(tp) * lat
        comm, overlap = 2 * m.layers * per if tp > 1 else 0.0, a.tp_overlap
    memory = (weights + kv) / (chip.memory_tbs * 1e12 * a.memory_efficiency)
    return max(compute, memory, overlap * comm) + (1 - overlap) * comm


def _largest_batch(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, limit: int) -> int:
    """Largest batch <= limit whose step meets the TPOT target (0 if even one does not)."""
    target = plan.tpot_ms / 1000
    if limit < 1 or decode_step_s(m, chip, plan, tp, 1) > target:
        return 0
    lo, hi = 1, limit
    while lo < hi:  # step time grows with the batch
        mid = (lo + hi + 1) // 2
        if decode_step_s(m, chip, plan, tp, mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def estimate_serving(plan: ServePlan, chip: Chip) -> ServeEstimate:
    m, a, d = plan.model, plan.assumptions, plan.demand
    kv_per_seq = (d.input_len + d.output_len) * m.kv_elements_per_token * plan.kv_bytes
    best = None
    for tp in ([plan.tp] if plan.tp else [2 ** i for i in range(11)]):
        free = tp * (chip.memory_gb * 1e9 * a.usable_memory - weight_bytes_per_chip(m, tp, plan.precision))
        max_mem = int(free // kv_per_seq) if free > 0 else 0
        batch = _largest_batch(m, chip, plan, tp, min(max_mem, plan.max_batch))
        if batch == 0:
            continue
        step = decode_step_s(m, chip, plan, tp, batch)
        per_chip = batch / step / tp
        if best is None or per_chip > best[3]:
            best = (tp, batch, step, per_chip, max_mem)
    if best is None:
        tried = plan.tp or "1..1024"
        raise ConfigError("tpot_ms", plan.tpot_ms,
                          f"a target {chip.key} can meet for {m.total_params_b:g}B parameters with tp={tried}: "
                          "no instance both holds the weights plus one sequence's KV cache and decodes "
                          "one token that fast; raise tpot_ms or tp, or use precision='fp8'")
    tp, batch, step, decode_per_chip, max_mem = best
    prefill_flops = 2 * (m.matmul_params - m.extra_activated_params_b * 1e9) + m.attention_flops_fwd(d.input_len / 2)
    prefill_per_chip = _speed(chip, plan.precision, a) / prefill_flops
    rps = d.peak_rps
    prefill_chips = math.ceil(rps * d.input_len * (1 - d.cache_hit_rate) / prefill_per_chip)
    decode_chips = math.ceil(rps * d.output_len / (batch / step)) * tp
    chips = prefill_chips + decode_chips
    cost = chips * chip.price_per_hour * 24
    return ServeEstimate(chip=chip.key, tp=tp, batch=batch, step_s=step,
                         decode_tps_per_chip=decode_per_chip, prefill_tps_per_chip=prefill_per_chip,
                         max_batch_memory=max_mem, prefill_chips=prefill_chips, decode_chips=decode_chips,
                         chips=chips, cost_per_day=cost, cost_per_million_tokens=cost / d.tokens_per_day * 1e6,
                         prefill_input_tps_per_chip=prefill_per_chip / (1 - d.cache_hit_rate))
