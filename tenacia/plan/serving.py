"""Serving: prefill and decode throughput per chip, the decode batch that meets a time-per-output-
token target, the throughput-versus-TPOT curve, and the chips a demand needs.

A decode instance is ``tp`` chips holding one copy of the weights. A dense model is split
tensor-parallel (two all-reduces of the batch's hidden states per layer). An MoE model runs as
DeepSeek serves V3: attention and other dense weights replicated on every chip, each chip
decoding its own B/tp sequences, routed experts spread over the chips (EP = tp), and one
all-to-all dispatch + combine per MoE layer. One decode step of a batch of B sequences takes

    max(matmul FLOPs / compute, (weights read + KV cache read) / HBM bandwidth, hidden comm)
    + exposed comm

- comm: per MoE layer a dispatch and a combine, each paying the link's latency, plus
  ``alltoall_overhead_us``: the fixed cost of one expert-parallel all-to-all (its kernels'
  setup, the synchronisation of every rank, round trips), the per-step fixed cost of expert
  parallelism, fitted on the serving tuning set of ``tenacia plan validate``. One tuning case
  cannot tell a scale-up fabric's cost from a scale-out one's, so every fabric pays the same;
- compute: the chip's large-GEMM rate (catalog ``matmul_efficiency``) times the GEMM shape factor
  of ``efficiency.py`` at the rows each GEMM really gets (B/tp per chip, B k / E per expert: small
  decode batches pad to whole tiles); routed experts wait for the most loaded rank
  (``expert_imbalance``);
- memory: resident dense weights, the experts the batch touches, E (1 - (1 - k/E)^B) per layer
  (every chip holds E/tp of them), and the KV cache at the mean context (prompt + half the output);
  its volume (dispatch in the weight format, combine in BF16) on the scale-up link when the
  instance fits one domain, else scale-out; ``ep_overlap``/``tp_overlap`` hide a share.

The batch is the largest whose step meets the target and whose KV cache fits; as the target
tightens the batch shrinks and throughput falls (``decode_curve``), since the fixed costs and the
weight reads are paid per step whatever the batch. Prefill is compute-bound with its own
all-to-all on ``prefill_chips`` chips. Prefill and decode run on separate chips (disaggregated
serving); a prefix-cache hit skips the prefill of that share of input tokens. Precision names
the weight format: bf16, fp8 (FP8 matmuls at ``fp8_speedup``), int8 (weights and their reads in
one byte, matmuls at the BF16 rate: no INT8 throughput is in the catalog). Queueing and time to
first token are not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import ConfigError, check, check_choice, check_finite
from .assumptions import Assumptions
from .catalog import Chip
from .efficiency import TILE, attention_shape_factor, model_shape_factor
from .models import ModelSpec

WEIGHT_BYTES = {"bf16": 2.0, "fp8": 1.0, "int8": 1.0}
CURVE_MS = (10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0)


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
    precision: str = "fp8"  # weights and matmuls: bf16, fp8 or int8
    kv_bytes: float = 0.0  # bytes per cached element; 0: 2 for bf16, else 1
    tp: int = 0  # chips per decode instance; 0: the power of two with most tokens/s per chip
    tpot_ms: float = 50.0  # time-per-output-token target
    max_batch: int = 65536  # largest decode batch considered (per instance)
    # Fixed cost of one expert-parallel all-to-all (dispatch + combine of a MoE layer), µs.
    # Fitted on the serving tuning set (DeepSeek's decode throughput on H800): bench/plan_tune.py.
    alltoall_overhead_us: float = 500.0
    # Tokens on the most loaded expert rank / the mean, in serving. Fitted on the serving tuning
    # set (DeepSeek's prefill throughput on H800): bench/plan_tune.py.
    expert_imbalance: float = 2.5
    # Chips a prefill instance spreads the routed experts over (DeepSeek V3/R1 inference overview:
    # prefill EP32 over 4 nodes)
    prefill_chips: int = 32
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
        check(self.alltoall_overhead_us >= 0, "alltoall_overhead_us", self.alltoall_overhead_us, "microseconds >= 0")
        check(self.expert_imbalance >= 1, "expert_imbalance", self.expert_imbalance, "a number >= 1")
        check(self.prefill_chips >= 1, "prefill_chips", self.prefill_chips, "a positive integer")
        self.kv_bytes = self.kv_bytes or (2.0 if self.precision == "bf16" else 1.0)


@dataclass(kw_only=True, slots=True, frozen=True)
class ServeEstimate:
    chip: str
    tp: int
    batch: int
    step_s: float  # decode step at that batch (= time per output token)
    decode_tps_per_chip: float
    prefill_tps_per_chip: float  # computed (uncached) prompt tokens per prefill chip-second
    prefill_input_tps_per_chip: float  # prompt tokens per prefill chip-second, prefix-cache hits included
    max_batch_memory: int  # sequences whose full context fits the instance's free memory
    prefill_chips: int
    decode_chips: int
    chips: int
    cost_per_day: float
    cost_per_million_tokens: float
    curve: list[dict]  # decode tokens/s per chip at each TPOT target of CURVE_MS (0: unreachable)

    def summary(self) -> dict:
        return {f.name: getattr(self, f.name) for f in self.__dataclass_fields__.values()}


def _rate(chip: Chip, precision: str, a: Assumptions) -> float:
    """FLOP/s of a large GEMM in ``precision`` (INT8 at the BF16 rate: module docstring)."""
    rate = chip.peak_flops("bf16") * chip.matmul_efficiency * a.compute_efficiency
    if precision == "fp8":
        rate *= min(a.fp8_speedup, chip.peak_flops("fp8") / chip.peak_flops("bf16"))
    return rate


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


def _serving_params(m: ModelSpec) -> tuple[float, float]:
    """(dense, routed) matmul parameters per token in serving (training-only modules left out)."""
    routed = m.routed_activated_params_b * 1e9
    return m.matmul_params - m.extra_activated_params_b * 1e9 - routed, routed


def _all_to_all_s(m: ModelSpec, chip: Chip, plan: ServePlan, chips: int, tokens: float) -> float:
    """Dispatch (weight format) + combine (BF16) of ``tokens`` per chip over every MoE layer, as in
    training (training.microbatch_time): copies inside the scale-up domain on its link and to other
    domains on scale-out, at once; node-limited routing sends one copy per remote domain. The most
    loaded rank (``expert_imbalance``) sets the pace."""
    if not m.is_moe or chips <= 1:
        return 0.0
    a, k = plan.assumptions, m.experts_per_token
    in_domain = min(chips, chip.scale_up_domain)
    domains = math.ceil(chips / in_domain)
    if m.routing_max_groups and domains > 1:
        out_copies = min(m.routing_max_groups, domains) * (domains - 1) / domains
    else:
        out_copies = k * (chips - in_domain) / chips
    up_copies = k * (in_domain - 1) / in_domain
    per_copy = tokens * plan.expert_imbalance * m.hidden * (WEIGHT_BYTES[plan.precision] + 2)
    bw_out, lat_out = _link(chip, chips, a)
    bw_up, lat_up = _link(chip, 1, a)
    per_layer = max(out_copies * per_copy / bw_out, up_copies * per_copy / bw_up)
    fixed = 2 * (lat_out if domains > 1 else lat_up) + plan.alltoall_overhead_us * 1e-6
    return m.moe_layers * (per_layer + fixed)


def decode_step_s(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, batch: int) -> float:
    """One decode step of ``batch`` sequences on a ``tp``-chip instance (module docstring)."""
    a, wb = plan.assumptions, WEIGHT_BYTES[plan.precision]
    context = plan.demand.input_len + plan.demand.output_len / 2
    dense, routed = _serving_params(m)
    k0 = a.gemm_k_overhead
    if m.is_moe:  # each chip runs its own batch / tp rows through attention, experts from everyone
        factor = model_shape_factor(m, 1, batch / tp, tp, k0, backward=False)
    else:
        factor = model_shape_factor(m, tp, batch, 1, k0, backward=False)
    rate = _rate(chip, plan.precision, a) * factor
    matmul = batch / tp * 2 * (dense + routed * plan.expert_imbalance) / rate
    bf16 = _rate(chip, "bf16", a) * attention_shape_factor(m, context, k0, backward=False)
    attention = batch / tp * m.attention_flops_fwd(context) / bf16
    kv = batch * context * m.kv_elements_per_token * plan.kv_bytes / tp
    bw, lat = _link(chip, tp, a)
    if m.is_moe:
        touched = m.experts * -math.expm1(batch * math.log1p(-m.experts_per_token / m.experts))
        weights = (m.dense_params_b * 1e9 + m.moe_layers * touched * 3 * m.hidden * m.expert_ffn / tp) * wb
        comm, overlap = _all_to_all_s(m, chip, plan, tp, batch / tp), a.ep_overlap
    else:
        weights = m.total_params_b * 1e9 * wb / tp
        per = 2 * (tp - 1) / tp * batch * m.hidden * 2 / bw + 2 * math.log2(tp) * lat
        comm, overlap = 2 * m.layers * per if tp > 1 else 0.0, a.tp_overlap
    memory = (weights + kv) / (chip.memory_tbs * 1e12 * a.memory_efficiency)
    return max(matmul + attention, memory, overlap * comm) + (1 - overlap) * comm


def prefill_tps_per_chip(m: ModelSpec, chip: Chip, plan: ServePlan) -> float:
    """Computed prompt tokens per chip-second: each chip of a ``prefill_chips`` instance takes one
    prompt (``input_len`` tokens) per step; matmuls at those rows, attention at half the prompt as
    context, and the step's all-to-all, ``ep_overlap`` of it hidden."""
    a, n, tokens = plan.assumptions, plan.prefill_chips, plan.demand.input_len
    dense, routed = _serving_params(m)
    k0 = a.gemm_k_overhead
    if m.is_moe:  # attention replicated (data-parallel), experts spread over the instance
        factor = model_shape_factor(m, 1, tokens, n, k0, backward=False)
    else:
        factor = model_shape_factor(m, n, tokens * n, 1, k0, backward=False)
    compute = tokens * 2 * (dense + routed * plan.expert_imbalance) / (_rate(chip, plan.precision, a) * factor)
    compute += tokens * m.attention_flops_fwd(tokens / 2) / (_rate(chip, "bf16", a)
                                                            * attention_shape_factor(m, tokens, k0, backward=False))
    comm = _all_to_all_s(m, chip, plan, n, tokens)
    return tokens / (max(compute, a.ep_overlap * comm) + (1 - a.ep_overlap) * comm)


def _largest_batch(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, limit: int, target: float) -> int:
    """Largest batch <= limit whose step meets ``target`` seconds (0 if even one does not)."""
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


def best_decode(plan: ServePlan, chip: Chip, target_s: float) -> tuple[int, int, float, int] | None:
    """(tp, batch, step seconds, memory's batch limit) with the most decode tokens/s per chip at
    ``target_s``, over the instance sizes tried (``plan.tp`` or powers of two) and the batches
    that meet it; None if none. A looser target only adds candidates: throughput never falls."""
    m, a, d = plan.model, plan.assumptions, plan.demand
    kv_per_seq = (d.input_len + d.output_len) * m.kv_elements_per_token * plan.kv_bytes
    best, best_rate = None, 0.0
    for tp in ([plan.tp] if plan.tp else [2 ** i for i in range(11)]):
        free = tp * (chip.memory_gb * 1e9 * a.usable_memory - weight_bytes_per_chip(m, tp, plan.precision))
        max_mem = int(free // kv_per_seq) if free > 0 else 0
        largest = _largest_batch(m, chip, plan, tp, min(max_mem, plan.max_batch), target_s)
        if largest == 0:
            continue
        # throughput is not monotone in the batch (a batch just past a whole GEMM tile pays for a
        # padded one): try the largest batch, every whole tile below it, and a geometric ladder
        tiles = range(tp * TILE, largest, max(tp * TILE, largest // 64 // (tp * TILE) * tp * TILE))
        ladder = {largest, *tiles, *(max(1, round(largest / 1.25 ** i)) for i in range(32))}
        for batch in sorted(ladder):
            step = decode_step_s(m, chip, plan, tp, batch)
            if batch / step / tp > best_rate:
                best, best_rate = (tp, batch, step, max_mem), batch / step / tp
    return best


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
    best = best_decode(plan, chip, plan.tpot_ms / 1000)
    if best is None:
        tried = plan.tp or "1..1024"
        raise ConfigError("tpot_ms", plan.tpot_ms,
                          f"a target {chip.key} can meet for {m.total_params_b:g}B parameters with tp={tried}: "
                          "no instance both holds the weights plus one sequence's KV cache and decodes "
                          "one token that fast; raise tpot_ms or tp, or use precision='fp8'")
    tp, batch, step, max_mem = best
    prefill_per_chip = prefill_tps_per_chip(m, chip, plan)
    rps = d.peak_rps
    prefill_chips = math.ceil(rps * d.input_len * (1 - d.cache_hit_rate) / prefill_per_chip)
    decode_chips = math.ceil(rps * d.output_len / (batch / step)) * tp
    chips = prefill_chips + decode_chips
    cost = chips * chip.price_per_hour * 24
    return ServeEstimate(chip=chip.key, tp=tp, batch=batch, step_s=step, decode_tps_per_chip=batch / step / tp,
                         prefill_tps_per_chip=prefill_per_chip,
                         prefill_input_tps_per_chip=prefill_per_chip / (1 - d.cache_hit_rate),
                         max_batch_memory=max_mem, prefill_chips=prefill_chips, decode_chips=decode_chips,
                         chips=chips, cost_per_day=cost, cost_per_million_tokens=cost / d.tokens_per_day * 1e6,
                         curve=decode_curve(plan, chip))
