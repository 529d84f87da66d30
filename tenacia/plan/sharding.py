"""Data-parallel communication as the frameworks run it: how many collectives a step holds under
each ZeRO stage, what one costs on a two-level network, and what part of it compute hides.

**What one collective costs.** An all-gather or reduce-scatter in which every rank ends with
(or contributes) ``S`` bytes, over ``n`` ranks of which ``r`` share each scale-up domain (a
node), ``m = ceil(n / r)`` domains, costs the slower of its two levels (Austin et al. 2025,
"How to Scale Your Model", ch. 12 "How to Think About GPUs", "Cross-node collectives": a
hierarchical ring, each level overlapped with the other; "when we have multiple axes of
sharding, the cost of the outer reduction is reduced by a factor of the number of nodes spanned
by the inner axis"):

    t = max( (n - 1)/n x S / scale_up_bw ,  (m - 1)/m x S / (r x scale_out_bw) ) / comm_efficiency
        + ring latency (m - 1 scale-out hops, n - m scale-up hops), once a layer's collective

The latency term is NCCL's own tuning model of a ring (src/graph/tuning.cc: "(nsteps -
nInterSteps) * intraLat + nInterSteps * interLat", nInterSteps = nNodes - 1 for an all-gather or
reduce-scatter; its per-hop figures, Ring/Simple 6.6-9.6 µs over the network and 3.4-5.7 µs
over NVLink across versions, bracket the catalog's 10 and 3 µs), paid by every layer's
collective: at thousands of ranks it, not the bandwidth, bounds a layer's gather.
``scale_out_bw`` is per chip (one NIC a chip), so a group with ``r`` ranks in a domain drives
``r`` NICs: the domain's egress, not one chip's, is the scale-out bound. Ranks are placed as
Megatron-LM and torchtitan order their meshes, tensor-parallel innermost, then context-parallel,
(expert-parallel,) data-parallel, pipeline outermost: the ranks that hold the same weights (the
context- and data-parallel ranks of one tensor-parallel rank) number ``min(n, domain // tp)`` in
a domain (``domain // (tp x ep)`` for the ranks that hold the same experts).
With tp = 8 on an 8-chip node, r = 1 and the old per-chip figure is exact; with FSDP's tp = 1,
r = 8. An all-reduce is a reduce-scatter plus an all-gather (twice the cost).

**How many, and when.** The count follows from what a chip keeps between micro-batches
(``layout.memory_per_chip``):
    stage 0  full gradients kept: one all-reduce of the gradients a step, after the last micro-batch
    stage 1  full gradients kept: one reduce-scatter a step ("communicate only at gradient
             accumulation boundaries", DeepSpeed PR #338, Rajbhandari 2020); the updated weight
             shards all-gathered once after the optimizer step (Megatron's distributed
             optimizer: "reduce-scatter of gradients and all-gather of updated parameters",
             Megatron Bridge docs, "Communication Overlap")
    stage 2  gradients sharded, so each micro-batch's gradients are reduce-scattered as its
             backward produces them ("Zero stage 2 communicates during non gradient accumulation
             boundaries as well", the same PR); weights all-gathered once a step (DeepSpeed's
             ZeRO-2 keeps whole weights, as the memory model does; FSDP's SHARD_GRAD_OP, which
             torchtitan's docs map to ZeRO-2, gathers them once a micro-batch instead: not modelled)
    stage 3  weights sharded too (FSDP FULL_SHARD, FSDP2 reshard_after_forward=True): every
             micro-batch all-gathers each layer's weights before its forward and again before its
             backward ("if True, then they are re-all-gathered in backward", torchtitan
             docs/fsdp.md) and reduce-scatters its gradients inside the backward (FSDP2 tutorial);
             under activation recomputation the recomputed forward runs inside the backward's
             gather ("the pre-backward hook is responsible for the unshard", FSDP2's
             _fsdp_state._pre_forward): still two; nothing is left for the step
Weights travel in BF16 (2 bytes), gradients in ``grad_reduce_bytes``.

**What hides them.** Each layer of a stage is one unit (torchtitan and llm-foundry wrap every
transformer block); its collective runs while a neighbouring unit computes: "layer 1 all-gather
can overlap with layer 0 forward compute ... (The 1st all-gather will not be able to overlap
with anything.)" (PyTorch docs, "FSDP Notes"); FSDP2 prefetches the backward's gathers in
reverse forward order (torchtitan docs/fsdp.md: always BACKWARD_PRE); Megatron Core chunks its
data-parallel communication "by the granularity of a Transformer layer and overlaps each
communication chunk with computation. This overlap method exposes only one DP communication
chunk" (Megatron Bridge docs, "Communication Overlap"). So over ``U`` units with per-unit
compute ``c`` and communication ``x``

    exposed = x + (U - 1) x max(0, x - c)

(one unit's collective waits; beyond that only the excess of communication over compute).
Backward units carry their gather and reduce-scatter together (one network). Step-level
collectives overlap the last micro-batch's backward (gradient reduction) and the first
micro-batch's forward (the weight all-gather of stages 1-2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .assumptions import Assumptions
from .catalog import Chip
from .models import ModelSpec


def ranks_per_domain(group: int, inner: int, domain: int) -> int:
    """Members of a data-parallel group in one scale-up domain when ``inner`` (tp, x ep for
    experts) consecutive chips separate them: ``min(group, domain // inner)``, at least 1."""
    return max(1, min(group, domain // max(inner, 1)))


def collective_s(nbytes: float, ranks: int, per_domain: int, chip: Chip, a: Assumptions,
                 pieces: float = 1.0) -> float:
    """Seconds of an all-gather or reduce-scatter of ``nbytes`` per rank (module docstring), run
    as ``pieces`` collectives (one a layer): the bandwidth term once, the ring latency each time."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    per_domain = max(1, min(per_domain, ranks))
    domains = math.ceil(ranks / per_domain)
    up_bw, up_lat = chip.scale_up_gbs * 1e9, chip.scale_up_latency_us * 1e-6
    out_bw, out_lat = chip.scale_out_gbs * 1e9, chip.scale_out_latency_us * 1e-6
    t = (ranks - 1) / ranks * nbytes / up_bw if per_domain > 1 else 0.0
    if domains > 1:
        t = max(t, (domains - 1) / domains * nbytes / (per_domain * out_bw))
    return t / a.comm_efficiency + max(pieces, 1.0) * ((domains - 1) * out_lat + (ranks - domains) * up_lat)


def pipelined_exposed(compute_s: float, comm_s: float, units: float) -> float:
    """Exposed seconds of ``comm_s`` split over ``units`` units, each unit's share overlapped
    with one unit of ``compute_s`` (module docstring): x + (U - 1) max(0, x - c)."""
    if comm_s <= 0:
        return 0.0
    u = max(units, 1.0)
    x, c = comm_s / u, compute_s / u
    return x + (u - 1) * max(0.0, x - c)


@dataclass(kw_only=True, slots=True, frozen=True)
class DataParallelComm:
    """One chip's data-parallel collectives, in seconds as if alone on the network."""

    weights_gather: float  # all-gather of this chip's stage weights (BF16)
    grads_reduce: float  # reduce-scatter of this chip's stage gradients

    def per_microbatch(self, zero: int) -> tuple[float, float]:
        """(forward, backward) collectives every micro-batch runs under ZeRO stage ``zero``."""
        if zero >= 3:
            return self.weights_gather, self.weights_gather + self.grads_reduce
        if zero == 2:
            return 0.0, self.grads_reduce
        return 0.0, 0.0

    def per_step(self, zero: int) -> tuple[float, float]:
        """(overlapping the first forward, overlapping the last backward) once a step."""
        if zero >= 3:
            return 0.0, 0.0
        if zero == 2:
            return self.weights_gather, 0.0
        if zero == 1:
            return self.weights_gather, self.grads_reduce
        return 0.0, 2 * self.grads_reduce  # all-reduce: reduce-scatter + all-gather


def data_parallel_comm(model: ModelSpec, chip: Chip, tp: int, cp: int, pp: int, ep: int, dp: int,
                       a: Assumptions) -> DataParallelComm:
    """The collectives of one chip over its data-parallel groups: dense weights over the
    ``dp * cp`` chips that hold them, routed experts over the ``dp * cp / ep`` that hold each
    expert (layout.memory_per_chip shards them the same way)."""
    shards = dp * max(cp, 1)
    dense = model.dense_params_b * 1e9 / (tp * pp)
    experts = model.expert_params_b * 1e9 / (pp * ep) if model.is_moe else 0.0
    domain = chip.scale_up_domain
    r_dense = ranks_per_domain(shards, tp, domain)  # context-parallel ranks hold the same weights
    group_e = max(shards // max(ep, 1), 1)
    r_exp = ranks_per_domain(group_e, tp * max(ep, 1), domain)

    units = model.layers / pp  # one collective a layer (module docstring)

    def both(per_param: float) -> float:
        return (collective_s(dense * per_param, shards, r_dense, chip, a, units)
                + collective_s(experts * per_param, group_e, r_exp, chip, a, units))

    return DataParallelComm(weights_gather=both(2.0), grads_reduce=both(a.grad_reduce_bytes))
