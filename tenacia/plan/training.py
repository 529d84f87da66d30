"""Training time from first principles: compute, memory traffic and communication per link level.

For one micro-batch on one chip (the work of one pipeline stage, split ``tp`` ways, on the
``seq_len / cp`` tokens of its context-parallel rank):

    t_compute = matmul FLOPs / (peak * matmul_efficiency * GEMM shape factor [* FP8 speedup])
              (under FP8 the output head's GEMMs, and each multi-token-prediction head's, keep
              the BF16 rate: Megatron-LM builds its output layer as its own ColumnParallelLinear,
              outside Transformer Engine's per-layer FP8 context, and DeepSeek-V3 keeps "the
              output head" in its original precision, report s3.3.1)
              + attention FLOPs / (BF16 peak * matmul_efficiency * attention shape factor)
              + elementwise bytes / (HBM bandwidth * memory_efficiency)
    t_comm    = TP collectives (scale-up link) + EP all-to-all (scale-up and scale-out at once)
              + pipeline sends (x v chunks) + ZeRO-3 weight gathers; each kind a share
              ``*_overlap`` hidden behind compute; + the context-parallel ring's part that
              outlasts the attention it overlaps
    t_micro   = max(t_compute + comm_sm_fraction * hidden, hidden) + exposed

A step is ``(micro-batches + bubble) * t_micro`` plus the exposed data-parallel gradient
reduction and the optimizer update. Model FLOPs (for MFU) count 6 per parameter per token plus
attention (3x its forward); executed FLOPs add flash attention's recomputation in backward
(3.5x forward, Dao 2023) and full activation recomputation when chosen. Every factor that is not
a FLOP, a byte or a catalog figure is a field of ``Assumptions``; ``efficiency.py`` turns GEMM
shapes into the fraction of peak they reach (``compute_efficiency`` multiplies it: 1 by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ConfigError
from .assumptions import Assumptions
from .catalog import Chip
from .efficiency import attention_shape_factor, model_shape_factor
from .layout import Layout, memory_per_chip
from .models import ModelSpec
from .sharding import data_parallel_comm, pipelined_exposed


@dataclass(kw_only=True, slots=True, frozen=True)
class MicroBatch:
    """Seconds one chip spends per micro-batch, by cause, and the resulting micro-batch time."""

    matmul: float
    attention: float
    memory: float
    tp: float
    ep: float
    pp: float
    cp: float  # exposed part of the ring-attention exchange
    zero: float  # ZeRO-2/3 collectives of the micro-batch (weight gathers, gradient reduce-scatters)
    zero_exposed: float  # the part of ``zero`` compute does not hide (sharding.pipelined_exposed)
    total: float
    forward: float  # share of total in the forward pass (F of layout.bubble_microbatches)
    weight_grad: float  # share of total in weight-gradient GEMMs (W): zero-bubble schedules defer these
    fwd_compute: float  # compute (matmul, attention, elementwise) of the forward pass
    bwd_compute: float  # compute of the backward pass (with any recomputed forward)


def model_flops_per_token(model: ModelSpec) -> float:
    """Training FLOPs per token counted for MFU: 6 per matmul parameter + 3x attention forward
    (causal: a token attends to seq_len/2 earlier tokens on average)."""
    return 6 * model.matmul_params + 3 * model.attention_flops_fwd(model.seq_len / 2)


def hardware_flops_per_token(model: ModelSpec, recompute: str) -> float:
    """FLOPs per token a chip actually executes: matmuls 6 per parameter (8 under full
    recomputation), attention 3.5x its forward (flash attention recomputes scores in backward;
    +1 forward under full recomputation)."""
    passes = 4 if recompute == "full" else 3
    return (2 * passes * model.matmul_params
            + (3.5 + passes - 3) * model.attention_flops_fwd(model.seq_len / 2))


def _elementwise_bytes_per_token(model: ModelSpec, precision: str) -> float:
    """HBM bytes of the non-matmul operations of one token's forward pass, all layers.

    Per layer: two norms (read+write h), two residual adds (read 2h, write h), rotary on q and k
    (read+write), SwiGLU (read gate and up, write the product) over the active FFN width, and in
    MoE layers the permutation to and from the k expert copies (read+write k*h, twice). BF16
    elements; FP8 adds a quantization pass (read 2 bytes, write 1) of each matmul input.
    """
    h = model.hidden
    total = 0.0
    for moe, count in ((False, model.layers - model.moe_layers), (True, model.moe_layers)):
        ffn = (model.experts_per_token + model.shared_experts) * model.expert_ffn if moe else model.ffn
        rotary = 2 * (model.heads + model.kv_heads) * model.head_dim
        elems = 4 * h + 6 * h + rotary + 3 * ffn + (4 * model.experts_per_token * h if moe else 0)
        layer = 2.0 * elems
        if precision == "fp8":
            ffn_in = (model.experts_per_token + model.shared_experts) * h if moe else h
            layer += 3.0 * (h + model.heads * model.v_head_dim + ffn_in + ffn)
        total += count * layer
    return total


def _link(chip: Chip, scale_up: bool) -> tuple[float, float]:
    """(bytes/s per direction, latency s) of one link level."""
    if scale_up:
        return chip.scale_up_gbs * 1e9, chip.scale_up_latency_us * 1e-6
    return chip.scale_out_gbs * 1e9, chip.scale_out_latency_us * 1e-6


def microbatch_time(model: ModelSpec, chip: Chip, layout: Layout, tp: int, pp: int, ep: int,
                    a: Assumptions, precision: str) -> MicroBatch:
    """Forward + backward of one micro-batch through one pipeline stage, on one chip."""
    cp = max(layout.cp, 1)
    tokens = layout.microbatch_seqs * model.seq_len / cp  # tokens entering one context-parallel rank
    per_chip = tokens / (tp * pp)  # a chip's share of the micro-batch, in tokens through the whole model
    passes = 4 if layout.recompute == "full" else 3  # forward, backward (2x), recomputed forward
    routed = model.routed_activated_params_b * 1e9
    matmul_flops = 2 * passes * (model.matmul_params - routed + routed * a.moe_imbalance) * per_chip
    rate = chip.peak_flops("bf16") * chip.matmul_efficiency * a.compute_efficiency  # a large GEMM's
    speed = rate * model_shape_factor(model, tp, tokens, ep, a.gemm_k_overhead)
    t_matmul = matmul_flops / speed
    if precision == "fp8":  # every GEMM but the output head's (and the MTP heads'), which stay BF16
        ratio = chip.peak_flops("fp8") / chip.peak_flops("bf16")
        head_flops = 2 * passes * model.head_params * per_chip
        t_matmul = (matmul_flops - head_flops) / (speed * min(a.fp8_speedup or ratio, ratio)) + head_flops / speed
    attn_fwd = model.attention_flops_fwd(model.seq_len / 2)
    attn_flops = attn_fwd * (3.5 + (passes - 3)) * per_chip
    t_attn = attn_flops / (rate * attention_shape_factor(model, model.seq_len / cp, a.gemm_k_overhead))
    mem_passes = passes + (1 if layout.recompute == "selective" else 0)  # rerun elementwise ops
    mem_bytes = _elementwise_bytes_per_token(model, precision) * mem_passes * per_chip
    t_mem = mem_bytes / (chip.memory_tbs * 1e12 * a.memory_efficiency)

    h, layers_here = model.hidden, model.layers / pp
    t_tp = 0.0
    if tp > 1:  # sequence parallel: all-gather + reduce-scatter around attention and FFN
        collectives = 4 * (passes - 1) * layers_here  # 4 per pass: forward, backward (x2 comms)
        volume = collectives * (tp - 1) / tp * tokens * h * 2
        bw, lat = _link(chip, tp <= chip.scale_up_domain)
        t_tp = volume / (bw * a.comm_efficiency) + collectives * (tp - 1) * lat

    t_ep = 0.0
    if model.is_moe and ep > 1:
        k = model.experts_per_token
        ranks_per_domain = min(ep, max(1, chip.scale_up_domain // tp))
        domains = math.ceil(ep / ranks_per_domain)
        if model.routing_max_groups and domains > 1:  # node-limited routing, one copy per domain
            out_copies = min(model.routing_max_groups, domains) * (domains - 1) / domains
        else:
            out_copies = k * (ep - ranks_per_domain) / ep
        up_copies = k * (ranks_per_domain - 1) / ranks_per_domain
        dispatch = 1 + 4 / 128 if precision == "fp8" else 2.0  # FP8 with one FP32 scale per 128
        per_copy = h * (dispatch + 2.0) * (passes - 1)  # dispatch + combine, each pass's direction
        moe_here = model.moe_layers / pp
        token_share = tokens / tp * moe_here * a.moe_imbalance
        bw_out, lat_out = _link(chip, domains == 1)
        bw_up, lat_up = _link(chip, True)
        t_out = token_share * out_copies * per_copy / (bw_out * a.comm_efficiency)
        t_up = token_share * up_copies * per_copy / (bw_up * a.comm_efficiency)
        t_ep = max(t_out, t_up) + 2 * (passes - 1) * moe_here * (lat_out if domains > 1 else lat_up)

    t_pp = 0.0
    if pp > 1:  # activations forward and gradients backward across the stage boundaries (v per stage)
        bw, lat = _link(chip, tp * cp * pp <= chip.scale_up_domain)
        t_pp = layout.chunks * (2 * tokens / tp * h * 2 / (bw * a.comm_efficiency) + 2 * lat)

    t_cp = 0.0
    if cp > 1:  # ring attention: every rank's K and V pass the ring forward, K, V, dK, dV backward
        kv = model.kv_elements_per_token / pp * tokens / tp * 2  # BF16 bytes of this rank's K and V
        bw, lat = _link(chip, tp * cp <= chip.scale_up_domain)
        # forward: K, V; backward: K, V again and dK, dV back (3x); full recomputation: +1
        t_cp = (cp - 1) * passes * (kv / (bw * a.comm_efficiency) + model.layers / pp * lat)
        t_cp = max(t_cp - t_attn, 0.0)  # each hop overlaps one block of attention

    # data-parallel collectives of ZeRO-2/3 that every micro-batch runs, each layer's overlapped
    # with a layer of compute (sharding.py: counts from the ZeRO and FSDP papers, FSDP's prefetch)
    compute = t_matmul + t_attn + t_mem
    fwd_compute = t_matmul / passes + t_attn / (3.5 + passes - 3) + t_mem / mem_passes
    bwd_compute = compute - fwd_compute
    t_zero = zero_exposed = 0.0
    if (layout.zero or 0) >= 2 and layout.dp * cp > 1:
        comm = data_parallel_comm(model, chip, tp, cp, pp, ep, layout.dp, a)
        fwd, bwd = comm.per_microbatch(layout.zero)
        units = model.layers / pp
        t_zero = fwd + bwd
        zero_exposed = pipelined_exposed(fwd_compute, fwd, units) + pipelined_exposed(bwd_compute, bwd, units)

    hidden = (a.tp_overlap * t_tp + a.ep_overlap * t_ep + a.pp_overlap * t_pp
              + (t_zero - zero_exposed))
    exposed = (t_tp + t_ep + t_pp + t_cp + t_zero) - hidden
    # while hidden communication runs, its kernels hold comm_sm_fraction of the compute units
    total = max(compute + a.comm_sm_fraction * hidden, hidden) + exposed
    # F: one of the matmul passes, attention's forward (1 of 3.5 + recomputation), one elementwise
    # pass, one of the communication passes, capped at 1/3 so that the search's bound (F = W = 1/3,
    # layout.py) stays a lower bound; W: the weight-gradient GEMMs (2 of 2 x passes FLOPs)
    forward = (t_matmul / passes + t_attn / (3.5 + passes - 3) + t_mem / mem_passes
               + (total - compute) / (passes - 1))
    return MicroBatch(matmul=t_matmul, attention=t_attn, memory=t_mem, tp=t_tp, ep=t_ep, pp=t_pp,
                      cp=t_cp, zero=t_zero, zero_exposed=zero_exposed, total=total,
                      forward=min(forward / total, 1 / 3), weight_grad=t_matmul / passes / total,
                      fwd_compute=fwd_compute, bwd_compute=bwd_compute)


def grad_sync_time(model: ModelSpec, chip: Chip, layout: Layout, tp: int, pp: int, ep: int, dp: int,
                   micro: MicroBatch, a: Assumptions) -> float:
    """Exposed data-parallel communication a step adds beyond its micro-batches (sharding.py):
    the gradient all-reduce (ZeRO-0) or reduce-scatter (ZeRO-1) during the last micro-batch's
    backward, the weight all-gather of ZeRO-1/2 during the first micro-batch's forward, each a
    layer's worth at a time; nothing under ZeRO-3 (every micro-batch gathers and reduces)."""
    if dp * max(layout.cp, 1) <= 1:
        return 0.0
    comm = data_parallel_comm(model, chip, tp, layout.cp, pp, ep, dp, a)
    first, last = comm.per_step(layout.zero or 0)
    units = model.layers / pp
    return pipelined_exposed(micro.fwd_compute, first, units) + pipelined_exposed(micro.bwd_compute, last, units)


def optimizer_time(model: ModelSpec, chip: Chip, tp: int, pp: int, ep: int, dp: int, zero: int | None,
                   a: Assumptions) -> float:
    """Adam update, memory-bound: read+write master weights and both moments, read the gradient,
    write the BF16 weight, for the parameters this chip updates."""
    dense = model.dense_params_b * 1e9 / (tp * pp)
    experts = model.expert_params_b * 1e9 / (pp * ep)
    local = dense / dp + experts / max(dp // ep, 1) if (zero or 0) >= 1 else dense + experts
    touched = local * (2 * a.optimizer_bytes_per_param + 2 + 2)
    return touched / (chip.memory_tbs * 1e12 * a.memory_efficiency)


def check_fits(model: ModelSpec, chip: Chip, layout: Layout, tp: int, pp: int, ep: int, dp: int,
               a: Assumptions) -> None:
    """Raise ConfigError when the layout does not fit the chip's memory."""
    use = memory_per_chip(model, layout, tp, pp, ep, dp, a.optimizer_bytes_per_param,
                          a.activation_memory_scale)
    limit = chip.memory_gb * 1e9 * a.usable_memory
    if use.total > limit:
        raise ConfigError("layout", f"tp={tp} cp={layout.cp} pp={pp} ep={ep} dp={dp} on {chip.key}",
                          f"a layout that fits {chip.memory_gb:g} GB x usable_memory "
                          f"{a.usable_memory:g}: it needs {use.total / 1e9:.1f} GB per chip "
                          f"(weights {use.weights / 1e9:.1f}, gradients {use.gradients / 1e9:.1f}, "
                          f"optimizer {use.optimizer / 1e9:.1f}, activations {use.activations / 1e9:.1f}); "
                          "raise tp/cp/pp/ep, use a higher layout.zero or layout.recompute='full'")
