"""What one serving step costs: a decode step of B sequences on an instance, a prefill step of one
prompt per chip. ``serving.py`` chooses the instances and batches; this module only prices them.

Every operator of a step is priced by its own roofline, and the operators of a layer run one
after another, so a step is a sum of maxima, not a maximum of sums:

    decode step = sum over operators of max(FLOPs / its compute rate, bytes / HBM bandwidth)
                  + exposed all-to-all + fixed costs (per step; per layer; per MoE layer of an
                    instance spanning several scale-up domains)

- dense GEMMs (attention projections, shared experts, dense FFNs, output head): the batch's
  rows through weights every chip holds (an MoE instance replicates them, a dense one splits
  them ``tp`` ways); at a small batch they are weight reads, at a large one FLOPs;
- routed experts: the rows the most loaded rank gets (``expert_imbalance`` x the mean) through
  the experts the instance's batch touches, E (1 - (1 - k/E)^B) per layer, E/tp on each chip;
- attention: each sequence reads its KV cache (``kv_elements_per_token`` x context x
  ``kv_bytes``) and does ``ModelSpec.decode_attention_flops`` (MLA absorbed: compute-bound, as
  FlashMLA is) at the chip's large-GEMM rate in ``attention_precision`` (BF16, or FP8 as
  FlashMLA-FP8 and FA3-FP8 run it);
- all-to-all (MoE): each MoE layer dispatches every token's k copies in the weight format and
  combines them in BF16; copies to chips of the same scale-up domain take its link, copies to
  other domains the scale-out link, both at once (``_all_to_all_s``). Decode sends every copy
  (DeepEP's low-latency kernels); prefill sends one copy per remote domain with node-limited
  routing (DeepEP's normal kernels). ``comm_overlap`` of it hides behind the step's compute, as
  two micro-batches do (DeepSeek's dual micro-batch overlap, SGLang's two-batch overlap,
  CloudMatrix-Infer's micro-batch pipeline); in prefill the all-to-all kernels hold
  ``prefill_comm_core_share`` of the chip's cores while they run, and compute slows for that time
  (DeepEP's normal kernels: 20 of 132 SMs; its low-latency decode kernels hold none);
- all-reduce (tensor parallelism: a dense model, or an MoE one with ``attention_parallel =
  'tensor'``): two of the step's rows a layer (``_all_reduce_s``), serial with the layer, never
  hidden: the layer after needs the reduced activations (Megatron-LM's g operator), and the
  stacks run a step's compute, memory and network operations one after another (NanoFlow, OSDI
  2025: overlapping them within a device is its contribution, 1.91x over TensorRT-LLM); at low
  concurrency "the time GPUs spend exchanging data can outweigh the time spent on compute"
  (NVIDIA, "3x Faster AllReduce with NVSwitch and TensorRT-LLM MultiShot"). Its size: vLLM's
  isolated all-reduce benchmark (PR #24111, H100 section, TP=6, BF16 rows of width 8,192) takes
  13 µs for 0.5 MB (ca_1stage: latency) and 31 µs for 4 MB (multimem; NCCL 53); the bandwidth
  term here, 2 x 5/6 x 4 MB at 0.7 x 450 GB/s, is 22 µs, the latency a layer being in
  ``layer_overhead_us`` (``_all_reduce_s``);
- fixed costs, paid however small the batch, by deployment (``fixed_s``): ``step_overhead_us``
  once a step (host work an overlap scheduler does not hide; 0 by default), ``layer_overhead_us``
  per layer on every deployment (launches under CUDA graphs, small GEMMs below the roofline,
  in-node all-reduces: 71 µs, from gpt-fast's published batch-1 dense Llama-2 tables on 1-8
  A100), ``moe_layer_kernel_us`` per MoE layer on every deployment (routing, gathered expert
  GEMMs: 33.7 µs, gpt-fast's batch-1 Mixtral against its Llama-2 7B on as many A100),
  ``mla_layer_us`` per layer of a latent-attention model (MLA's extra projections: 33.7 µs, the
  rest of TensorRT-LLM's published batch-1 DeepSeek-R1 on one 8x B200 node), ``moe_layer_overhead_us`` per MoE layer of an expert-parallel instance (0
  by default: an extra), and in decode the expert all-to-all's latency floor per MoE layer
  (``alltoall_floor_s``, ``ep_latency.py``: the published low-latency kernels' dispatch + combine
  at the instance's EP, DeepEP over RDMA across scale-up domains, DeepEP-Ascend inside a
  CloudMatrix384, none inside an NVLink node), paid unhidden: only the bandwidth all-to-all above
  it may hide behind compute. They are what makes a decode step take time at batch 1 beyond its
  weight reads;
- speculative decoding (``Speculation``, DeepSeek's MTP as SGLang runs it): each sequence's step
  verifies ``draft_tokens`` tokens, so every GEMM, the attention FLOPs and the all-to-all carry
  ``batch x draft_tokens`` rows while the KV cache is read once per sequence; the drafts cost
  ``draft_tokens - 1`` passes of one more layer (the MTP module), and the step emits
  ``accepted`` tokens per sequence on average: time per output token = step / accepted.

Rates: a GEMM runs at the chip's large-GEMM efficiency (catalog ``matmul_efficiency``) times its
precision's dense peak (FP8, INT8 where the catalog has one, else BF16) times the GEMM shape
factor of ``efficiency.py`` at the rows it really gets; HBM at ``hbm_efficiency`` of the
datasheet bandwidth (the catalog's per-chip figure where it has one); links at ``Assumptions.comm_efficiency``,
the all-to-all at the catalog's measured ``alltoall_efficiency`` where the chip has one (Ascend 910C:
DeepEP-Ascend's published bandwidths).
"""

from __future__ import annotations

import math

from .assumptions import Assumptions
from .catalog import Chip
from .efficiency import attention_shape_factor, model_shape_factor
from .ep_latency import floor_us
from .models import ModelSpec
from .serve_plan import WEIGHT_BYTES, ServePlan, Speculation, StepCosts

__all__ = ["WEIGHT_BYTES", "Speculation", "StepCosts", "decode_parts", "decode_step_s",
           "alltoall_floor_s", "fixed_s", "gemm_rate", "kv_copies", "spans_domains", "prefill_tps_per_chip",
           "weight_bytes_per_chip"]

def gemm_rate(chip: Chip, precision: str, a: Assumptions) -> float:
    """FLOP/s of a large GEMM in ``precision``: the same fraction of that precision's peak as
    of the BF16 one (DeepGEMM's FP8 GEMMs reach 1,550 of the H800's 1,979 TFLOPS, above it)."""
    return chip.peak_flops(precision) * chip.matmul_efficiency * a.compute_efficiency


def _link(chip: Chip, chips: int, efficiency: float) -> tuple[float, float]:
    """(bytes/s, latency s) of the link between chips of an instance of ``chips``, of which
    ``efficiency`` of the catalog bandwidth is reached."""
    scale_up = chips <= chip.scale_up_domain
    bw = (chip.scale_up_gbs if scale_up else chip.scale_out_gbs) * 1e9 * efficiency
    lat = (chip.scale_up_latency_us if scale_up else chip.scale_out_latency_us) * 1e-6
    return bw, lat


def weight_bytes_per_chip(m: ModelSpec, tp: int, precision: str, attention_parallel: str = "data") -> float:
    """Resident weights on one chip of a ``tp``-chip instance (``ServePlan.attention_parallel``)."""
    wb = WEIGHT_BYTES[precision]
    if m.is_moe and attention_parallel == "data":  # dense weights replicated, routed experts spread
        return (m.dense_params_b + m.expert_params_b / tp) * 1e9 * wb
    return m.total_params_b * 1e9 * wb / tp


def kv_copies(m: ModelSpec, plan: ServePlan, tp: int) -> float:
    """Copies of each sequence's KV cache a ``tp``-chip instance holds (and reads): 1 when each
    chip decodes its own sequences (an MoE instance's data-parallel attention) or when tensor
    parallelism splits the KV heads; tp / kv_heads when tp exceeds them (GQA: each chip keeps the
    KV head its query heads share); tp for a latent cache (MLA's latent is every head's)."""
    if tp <= 1 or (m.is_moe and plan.attention_parallel == "data"):
        return 1.0
    return float(tp) if m.is_mla else max(1.0, tp / m.kv_heads)


def serving_params(m: ModelSpec) -> tuple[float, float]:
    """(dense, routed) matmul parameters per token in serving (training-only modules left out)."""
    routed = m.routed_activated_params_b * 1e9
    return m.matmul_params - m.extra_activated_params_b * 1e9 - routed, routed


def _all_to_all_s(m: ModelSpec, chip: Chip, plan: ServePlan, chips: int, tokens: float, node_limited: bool) -> float:
    """Dispatch (weight format) + combine (BF16) of ``tokens`` per chip over every MoE layer on an
    instance of ``chips``: per layer the slower of the scale-up and scale-out volumes (both links
    at once) plus each transfer's latency; the most loaded rank (``expert_imbalance``) sets the
    pace, on the scale-out link too unless copies are node-limited. ``node_limited``: one copy per remote domain a token reaches (at most
    ``routing_max_groups``), else every one of its k copies."""
    if not m.is_moe or chips <= 1:
        return 0.0
    a, k = plan.assumptions, m.experts_per_token
    in_domain = min(chips, chip.scale_up_domain)
    domains = math.ceil(chips / in_domain)
    if node_limited and m.routing_max_groups and domains > 1:
        out_copies = min(m.routing_max_groups, domains) * (domains - 1) / domains
    else:
        out_copies = k * (chips - in_domain) / chips
    up_copies = k * (in_domain - 1) / chips
    per_copy = tokens * plan.step.expert_imbalance * m.hidden * (WEIGHT_BYTES[plan.precision] + 2)
    # node-limited copies land on the remote domain's peer and are forwarded inside it (DeepEP's
    # normal kernels): the scale-out link carries a whole domain's experts, whose load evens out
    out_per_copy = per_copy / plan.step.expert_imbalance if node_limited else per_copy
    efficiency = chip.alltoall_efficiency or a.comm_efficiency
    bw_out, lat_out = _link(chip, chips, efficiency)
    bw_up, lat_up = _link(chip, 1, efficiency)
    per_layer = max(out_copies * out_per_copy / bw_out, up_copies * per_copy / bw_up)
    return m.moe_layers * (per_layer + 2 * (lat_out if domains > 1 else lat_up))


def _all_reduce_s(m: ModelSpec, chip: Chip, a: Assumptions, tp: int, tokens: float) -> float:
    """A tensor-parallel step's two all-reduces a layer (after attention, after the MLP) of
    ``tokens`` rows of BF16 activations on a ``tp``-chip instance, over every layer: ring volume
    2 (tp - 1) / tp of the message at ``comm_efficiency`` of the link. Inside one scale-up domain
    the latency is not added: ``layer_overhead_us`` was derived from gpt-fast's batch-1 rows on 1
    to 8 GPUs, their all-reduces included (the 7B's per-layer cost falls from 71 µs on 1 GPU to
    59 on 8: no separate latency term shows). Across domains each adds 2 log2(tp) link latencies.
    Every layer waits for them: serial with the step, never hidden (``decode_parts``)."""
    if tp <= 1:
        return 0.0
    bw, lat = _link(chip, tp, a.comm_efficiency)
    lat = lat if spans_domains(chip, tp) else 0.0
    return 2 * m.layers * (2 * (tp - 1) / tp * tokens * m.hidden * 2 / bw + 2 * math.log2(tp) * lat)


def spans_domains(chip: Chip, chips: int) -> bool:
    """Whether an instance of ``chips`` reaches past one scale-up domain (its all-to-all crosses
    the scale-out network: RDMA between nodes)."""
    return chips > chip.scale_up_domain


def alltoall_floor_s(m: ModelSpec, chip: Chip, chips: int) -> float:
    """Seconds a decode step's expert all-to-all takes at least, over every MoE layer, on an
    instance of ``chips`` (``ep_latency.py``: the published low-latency kernels' timings)."""
    return m.moe_layers * floor_us(chip.key, chip.scale_up_domain, chips, m.is_moe) * 1e-6


def fixed_s(m: ModelSpec, chip: Chip, costs: StepCosts, chips: int, decode: bool = True) -> float:
    """A step's fixed costs on an instance of ``chips`` (module docstring): the host's per step,
    every layer's (``layer_overhead_us``, and ``mla_layer_us`` more with latent attention), every
    MoE layer's ``moe_layer_kernel_us``, each MoE layer's ``moe_layer_overhead_us`` on an
    expert-parallel instance, and in decode the all-to-all's latency floor (prefill's normal
    kernels are priced by bandwidth)."""
    ep = m.is_moe and chips > 1
    layer = costs.layer_overhead_us + (costs.mla_layer_us if m.is_mla else 0.0)
    moe = costs.moe_layer_kernel_us + (costs.moe_layer_overhead_us if ep else 0.0)  # a dense model has no MoE layer
    floor = alltoall_floor_s(m, chip, chips) if decode else 0.0
    return (costs.step_overhead_us + m.layers * layer + m.moe_layers * moe) * 1e-6 + floor


def _step(compute: float, comm: float, fixed: float, overlap: float, core_share: float = 0.0) -> float:
    """Compute with ``overlap`` of the communication hidden behind it, plus the fixed costs.
    While hidden communication runs, compute has ``1 - core_share`` of the chip's cores: compute
    stretches by ``core_share x`` the hidden time it shares (at most to ``compute / (1 - core_share)``)."""
    hidden = overlap * comm
    compute = min(compute / (1 - core_share), compute + core_share * hidden)
    return max(compute, hidden) + comm - hidden + fixed


def _decode_work(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, batch: float,
                 chunk: float = 0.0) -> tuple[dict, float, float]:
    """(operator parts, compute, bandwidth all-to-all or all-reduce) of a decode step of ``batch``
    sequences on a ``tp``-chip instance: each operator's roofline (module docstring). ``chunk``:
    prompt tokens prefilled in the same step (aggregated serving, ``aggregated.py``); they join
    every GEMM's rows, and each attends to half its prompt (causal) at the prefill attention rate.
    On an MoE instance with data-parallel attention the chunk is one sequence's, so it lands on one
    chip, whose dense and attention work then sets the step; its tokens reach every expert rank.
    With tensor-parallel attention (``ServePlan.attention_parallel``) an MoE instance runs as a
    dense one: every chip takes every row through 1/tp of the dense weights and of each expert
    the batch touches, with two all-reduces of the batch a layer."""
    a, costs, wb, spec = plan.assumptions, plan.step, WEIGHT_BYTES[plan.precision], plan.speculation
    rows = batch * spec.draft_tokens  # tokens through the GEMMs: every sequence's verified ones
    hbm = chip.memory_tbs * 1e12 * (chip.hbm_efficiency or costs.hbm_efficiency)
    context = plan.demand.input_len + plan.demand.output_len / 2
    dense, routed = serving_params(m)
    embedding = m.vocab * m.hidden  # a lookup: not read whole
    k0 = a.gemm_k_overhead
    attention_rate = gemm_rate(chip, plan.attention_precision, a)
    data_parallel = m.is_moe and plan.attention_parallel == "data"
    own_chunk = chunk if data_parallel else chunk / tp  # the chunk's tokens on the busiest chip
    prompt = plan.demand.input_len
    chunk_attention = own_chunk * m.attention_flops_fwd(plan.demand.prefill_context) / (
        attention_rate * attention_shape_factor(m, prompt, k0, backward=False)) if chunk else 0.0
    ops = {"attention": (rows / tp * m.decode_attention_flops(context) / attention_rate + chunk_attention,
                         batch / tp * context * m.kv_elements_per_token * plan.kv_bytes * kv_copies(m, plan, tp) / hbm)}
    if data_parallel:  # each chip runs its own batch / tp rows; experts take rows from every chip
        mine, spread = rows / tp + chunk, (rows + chunk) / tp
        rate = gemm_rate(chip, plan.precision, a) * model_shape_factor(m, 1, spread, tp, k0, backward=False)
        touched = m.experts / tp * -math.expm1((rows + chunk) * math.log1p(-m.experts_per_token / m.experts))
        ops["dense"] = (mine * 2 * dense / rate, (m.dense_params_b * 1e9 - embedding) * wb / hbm)
        ops["experts"] = (spread * 2 * routed * costs.expert_imbalance / rate,
                          m.moe_layers * touched * 3 * m.hidden * m.expert_ffn * wb / hbm)
        comm = _all_to_all_s(m, chip, plan, tp, mine, node_limited=False)
    else:  # tensor parallel: weights split tp ways, two all-reduces of the batch per layer
        tokens = rows + chunk
        rate = gemm_rate(chip, plan.precision, a) * model_shape_factor(m, tp, tokens, 1, k0, backward=False)
        ops["dense"] = (tokens * 2 * dense / tp / rate, (m.dense_params_b * 1e9 - embedding) * wb / tp / hbm)
        if m.is_moe:  # the experts the batch touches, each split tp ways
            touched = m.experts * -math.expm1(tokens * math.log1p(-m.experts_per_token / m.experts))
            ops["experts"] = (tokens * 2 * routed / tp / rate,
                              m.moe_layers * touched * 3 * m.hidden * m.expert_ffn * wb / tp / hbm)
        comm = _all_reduce_s(m, chip, a, tp, tokens)
    parts = {}
    for name, (compute_s, memory_s) in ops.items():
        parts[f"{name}_s"] = max(compute_s, memory_s)
        parts[f"{name}_bound"] = "compute" if compute_s >= memory_s else "memory"
    return parts, sum(parts[f"{name}_s"] for name in ops), comm


def decode_parts(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, batch: int,
                 chunk: float = 0.0) -> dict[str, float]:
    """Seconds of one decode step of ``batch`` sequences on a ``tp``-chip instance, by operator
    (module docstring): each operator's roofline (``*_s``, and which bound it: ``*_bound``), the
    all-to-all or all-reduce before overlap, the fixed cost, the draft passes, the step, and the
    time per output token (``tpot_s`` = step / ``speculation.accepted``). ``chunk``: prompt tokens
    prefilled in the same step (``_decode_work``; aggregated serving).

    With ``StepCosts.two_batch_overlap`` (a MoE instance, batch >= 2) the step runs two
    micro-batches of batch / 2: in every layer one computes while the other's all-to-all (the
    larger of its bandwidth time and the latency floor) runs. The chip computes 2c a layer and
    each micro-batch cycles through c + a, so a layer takes max(2c, c + a), and the floor leaves
    the unhidden fixed cost:
    step = max(2 compute(B/2), compute(B/2) + max(all-to-all(B/2), floor)) + (fixed - floor) + drafts.
    Each micro-batch reads the weights again (memory-bound GEMMs cost twice)."""
    costs, spec = plan.step, plan.speculation
    parts, compute, comm = _decode_work(m, chip, plan, tp, batch, chunk)
    all_to_all = m.is_moe and plan.attention_parallel == "data"  # tensor-parallel attention all-reduces instead
    fixed = fixed_s(m, chip, costs, tp, decode=all_to_all)  # decode=False: no all-to-all floor
    floor = alltoall_floor_s(m, chip, tp) if all_to_all else 0.0
    if costs.two_batch_overlap and all_to_all and tp > 1 and batch >= 2:
        _, half, half_comm = _decode_work(m, chip, plan, tp, batch / 2, chunk / 2)
        core = max(2 * half, half + max(half_comm, floor))
        comm, compute = max(half_comm, floor), 2 * half
        draft = (spec.draft_tokens - 1) * (compute + fixed) / m.layers
        step = core + fixed - floor + draft
    else:
        # the all-to-all's latency floor is in ``fixed``, paid unhidden: only the time above it may hide
        comm = max(0.0, comm - floor)
        # each draft is one pass of the MTP module: about one layer's share of the step
        draft = (spec.draft_tokens - 1) * (compute + fixed) / m.layers
        # a tensor-parallel layer waits for its all-reduces: none hides (module docstring)
        step = _step(compute, comm, fixed, costs.comm_overlap if all_to_all else 0.0) + draft
    return parts | {"comm_s": comm, "fixed_s": fixed, "draft_s": draft, "step_s": step,
                    "tpot_s": step / spec.accepted}


def decode_step_s(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int, batch: int) -> float:
    """One decode step of ``batch`` sequences on a ``tp``-chip instance (module docstring)."""
    return decode_parts(m, chip, plan, tp, batch)["step_s"]


def prefill_tps_per_chip(m: ModelSpec, chip: Chip, plan: ServePlan, tp: int = 1) -> float:
    """Computed prompt tokens per chip-second: each chip of a prefill instance takes one prompt's
    worth (``input_len`` tokens) per step; matmuls at those rows, attention (not absorbed) over
    ``Demand.prefill_context`` (the cached prefix a hit skips computing is still attended to, then
    half the computed rest: causal), and the instance's communication. The instance splits the
    model as the decode instance does (``ServePlan.attention_parallel``):

    - an MoE model with data-parallel attention: attention replicated, the routed experts spread
      over ``prefill_chips`` (32 by default: DeepSeek's EP32), the most loaded rank at
      ``expert_imbalance``, a node-limited all-to-all ``comm_overlap`` of which hides;
    - a dense model, or an MoE one with ``attention_parallel = 'tensor'``: every weight (each
      expert too) split over ``prefill_chips`` chips, the decode instance's ``tp`` by default (one
      engine prefills and decodes on the same tensor-parallel group: SGLang's, vLLM's and
      TensorRT-LLM's ``--tp N``), every chip taking the instance's ``n x input_len`` rows through
      1/n of each weight, so no rank is busier than another, and two all-reduces of those rows a
      layer that the layer waits for (``_all_reduce_s``)."""
    a, costs, tokens = plan.assumptions, plan.step, plan.demand.input_len
    dense, routed = serving_params(m)
    k0 = a.gemm_k_overhead
    data_parallel = m.is_moe and plan.attention_parallel == "data"
    n = plan.prefill_chips or (32 if data_parallel else tp)
    if data_parallel:  # attention replicated, experts spread over the instance
        factor = model_shape_factor(m, 1, tokens, n, k0, backward=False)
        imbalance, overlap = costs.expert_imbalance, costs.comm_overlap
        comm = _all_to_all_s(m, chip, plan, n, tokens, node_limited=True)
    else:  # tensor parallel: the instance's n prompts through 1/n of every weight
        factor = model_shape_factor(m, n, tokens * n, 1, k0, backward=False)
        imbalance, overlap = 1.0, 0.0
        comm = _all_reduce_s(m, chip, a, n, tokens * n)
    compute = tokens * 2 * (dense + routed * imbalance) / (gemm_rate(chip, plan.precision, a) * factor)
    compute += tokens * m.attention_flops_fwd(plan.demand.prefill_context) / (gemm_rate(chip, plan.attention_precision, a)
                                                            * attention_shape_factor(m, tokens, k0, backward=False))
    share = costs.prefill_comm_core_share if data_parallel else 0.0
    return tokens / _step(compute, comm, fixed_s(m, chip, costs, n, decode=False), overlap, share)
