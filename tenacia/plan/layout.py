"""Parallel layout of a training run, and the memory it needs per chip.

A replica is ``tp * pp`` chips (tensor x pipeline); ``dp`` replicas run data-parallel, and
expert parallelism (``ep``) shards each MoE layer's routed experts over ``ep`` of those replicas
(as in DeepSeek-V3 and Megatron: EP lives inside the data-parallel dimension). Routed experts are
not tensor-parallel (expert tensor parallelism = 1). A field left at 0 is searched (see
``training.search_layout``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check, check_choice
from .models import ModelSpec

SCHEDULES = ("1f1b", "interleaved", "dualpipe", "zero-bubble")


@dataclass(kw_only=True, slots=True)
class Layout:
    tp: int = 0  # tensor parallel (0: search)
    pp: int = 0  # pipeline stages (0: search)
    ep: int = 0  # expert parallel, a divisor of dp (0: search; 1 for dense models)
    dp: int = 0  # data-parallel replicas; 0: every replica the fleet holds
    microbatch_seqs: int = 1  # sequences per micro-batch
    schedule: str = "1f1b"  # pipeline schedule: 1f1b, interleaved, dualpipe, zero-bubble
    virtual_stages: int = 1  # model chunks per stage (interleaved schedule)
    zero: int = 1  # 0: replicated states; 1: optimizer states sharded over dp; 2: + gradients
    # 'none' keeps every activation; 'selective' drops norm and SwiGLU outputs and recomputes
    # them (elementwise work only); 'full' keeps layer inputs and reruns the whole forward
    recompute: str = "none"

    def __post_init__(self) -> None:
        for key in ("tp", "pp", "ep", "dp"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "an integer >= 0 (0: search/fill)")
        check(self.microbatch_seqs > 0, "microbatch_seqs", self.microbatch_seqs, "a positive integer")
        check_choice("schedule", self.schedule, SCHEDULES)
        check(self.virtual_stages >= 1, "virtual_stages", self.virtual_stages, "an integer >= 1")
        check(self.virtual_stages == 1 or self.schedule == "interleaved", "virtual_stages",
              self.virtual_stages, "1 unless layout.schedule = 'interleaved'")
        check_choice("zero", self.zero, (0, 1, 2))
        check_choice("recompute", self.recompute, ("none", "selective", "full"))

    @property
    def searched(self) -> bool:
        return 0 in (self.tp, self.pp, self.ep)

    def bubble_microbatches(self, pp: int) -> float:
        """Pipeline bubble in units of one micro-batch's forward+backward time.

        1F1B: pp-1. Interleaved with v chunks: (pp-1)/v (Narayanan et al. 2021). DualPipe:
        (pp/2-1)(F&B + B - 3W) (DeepSeek-V3 report Table 2) with F = B = W = 1/3 of a
        micro-batch, i.e. (pp/2-1)/3. Zero-bubble schedules: 0.
        """
        if self.schedule == "1f1b":
            return pp - 1
        if self.schedule == "interleaved":
            return (pp - 1) / self.virtual_stages
        if self.schedule == "dualpipe":
            return max(pp / 2 - 1, 0) / 3
        return 0.0


def activation_bytes_per_token_layer(model: ModelSpec, moe: bool, selective: bool = False) -> float:
    """BF16 bytes one layer keeps for backward per token.

    The tensors a backward pass reads, after Korthikanti et al. 2022 with flash attention (no
    seq x seq scores): attention input, q/k/v, attention output, FFN input, SwiGLU gate/up/act
    outputs, two norm outputs; MoE layers also keep their k dispatched copies of the token.
    ``selective`` recomputation drops the SwiGLU product and the norm outputs.
    """
    h = model.hidden
    qkv = model.heads * model.head_dim + 2 * model.kv_heads * model.head_dim
    ffn_width = (model.experts_per_token + model.shared_experts) * model.expert_ffn if moe else model.ffn
    elems = h + qkv + model.heads * model.v_head_dim + h + (2 if selective else 3) * ffn_width
    if not selective:
        elems += 2 * h
    if moe:
        elems += model.experts_per_token * h
    return 2.0 * elems


@dataclass(kw_only=True, slots=True, frozen=True)
class MemoryUse:
    """Bytes per chip (the most loaded pipeline stage)."""

    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


def memory_per_chip(model: ModelSpec, layout: Layout, tp: int, pp: int, ep: int, dp: int,
                    optimizer_bytes_per_param: float, activation_scale: float = 1.0) -> MemoryUse:
    """Weights and gradients in BF16, optimizer states (FP32 master + Adam moments by default)
    sharded over the data-parallel group under ZeRO, and in-flight activations.

    1F1B-like schedules keep ``pp`` micro-batches in flight on the first stage, each holding
    ``layers/pp`` layers: ``layers`` layer-activations of one micro-batch in all (interleaving
    adds a factor 1 + (pp-1)/(pp*v)). DualPipe keeps two copies of the weights and ``(pp+1)/pp`` of that activation volume (DeepSeek-V3 report).
    The last stage also holds FP32 logits of one micro-batch (counted on every stage: a bound).
    ``activation_scale`` multiplies the layer activations (``Assumptions.activation_memory_scale``).
    """
    dense = model.dense_params_b * 1e9 / (tp * pp)
    experts = model.expert_params_b * 1e9 / (pp * ep)
    params = dense + experts
    copies = 2 if layout.schedule == "dualpipe" else 1
    weights = 2.0 * params * copies
    grads = 2.0 * params * copies
    if layout.zero >= 2:
        grads = 2.0 * (dense / dp + experts / max(dp // ep, 1)) * copies
    optim = optimizer_bytes_per_param * (dense + experts)
    if layout.zero >= 1:
        optim = optimizer_bytes_per_param * (dense / dp + experts / max(dp // ep, 1))
    tokens = layout.microbatch_seqs * model.seq_len
    if layout.recompute == "full":
        per_token = 2.0 * model.hidden * model.layers
    else:
        dense_layers = model.layers - model.moe_layers
        sel = layout.recompute == "selective"
        per_token = (dense_layers * activation_bytes_per_token_layer(model, False, sel)
                     + model.moe_layers * activation_bytes_per_token_layer(model, True, sel))
    in_flight = 1.0
    if layout.schedule == "dualpipe":
        in_flight = (pp + 1) / pp
    elif layout.schedule == "interleaved":  # Narayanan et al. 2021: 1 + (pp-1)/(pp*v)
        in_flight = 1 + (pp - 1) / (pp * layout.virtual_stages)
    logits = 4.0 * tokens * model.vocab
    activations = (tokens * per_token * in_flight * activation_scale + logits) / tp
    return MemoryUse(weights=weights, gradients=grads, optimizer=optim, activations=activations)
