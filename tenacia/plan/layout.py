"""Parallel layout of a training run, and the memory it needs per chip.

A replica is ``tp * cp * pp`` chips (tensor x context x pipeline); ``dp`` replicas run
data-parallel, and expert parallelism (``ep``) shards each MoE layer's routed experts over ``ep``
of those replicas (as in DeepSeek-V3 and Megatron: EP lives inside the data-parallel dimension).
Context parallelism splits every sequence over ``cp`` chips (ring attention: keys and values
travel round the ring). Routed experts are not tensor-parallel (expert tensor parallelism = 1).

Every field has a "search" value (0, 'auto' or None) that ``search.search_layout`` fills; a
layout given in part (e.g. tp and pp) fixes those fields and searches the rest. An explicit
layout (``resolved``) has none left.

Pipeline bubbles (``bubble_microbatches``), in micro-batch times (F + B + W = 1), with F the
forward, B the backward for inputs and W the backward for weights of one micro-batch:

    1f1b          pp - 1                                   (Narayanan et al. 2021)
    interleaved   (pp - 1) / v, v model chunks per stage   (Narayanan et al. 2021)
    zb-h1         (pp - 1)(F + B - W)                       (Qi et al. 2023, ZB-H1; 1F1B's memory)
    zero-bubble   (pp - 1) max(F + B - 2W, 0)               (Qi et al. 2023, ZB-H2; ~2x activations)
    dualpipe      (pp/2 - 1)(F&B + B - 3W), F&B = F + B + W (DeepSeek-V3 report, Table 2)

Zero-bubble schedules fill the bubble with the deferred W passes, so they gain only as much as
W weighs. Qi et al.'s zero assumes F = B = W; in a transformer W is only the weight-gradient
GEMMs (a third of the matmul work, a quarter under full recomputation): attention's backward,
the elementwise backward and the exposed communication are all B. So W < 1/3, ZB-H2 keeps a
bubble of (pp - 1)(1 - 3W) and ZB-H1 one of (pp - 1)(1 - 2W); the training model passes each
layout's own F and W (``training.MicroBatch``). With F = B = W = 1/3 (the defaults) they are
the closed forms (pp - 1)/3, 0 and (pp/2 - 1)/3, and these are lower bounds of the real ones,
which the layout search relies on. ZB-H2's price besides: up to 2pp - 1 micro-batches of
activations in flight (``in_flight``), and DualPipe's two copies of the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check, check_choice
from .models import ModelSpec

SCHEDULES = ("1f1b", "interleaved", "zb-h1", "zero-bubble", "dualpipe")
RECOMPUTE = ("none", "selective", "full")
ZERO = (0, 1, 2, 3)
# The year each technique was first published, for ``Layout.year`` (a run of that year could
# use it; the search of a layout with a year tries nothing later):
SINCE = {
    "1f1b": 2020,  # PipeDream-Flush, Narayanan et al. (arXiv 2006.09503, June 2020)
    "interleaved": 2021,  # Narayanan et al. 2021 (arXiv 2104.04473, April 2021)
    "zb-h1": 2024, "zero-bubble": 2024,  # Qi et al. (arXiv 2401.10241, January 2024)
    "dualpipe": 2024,  # DeepSeek-V3 technical report (arXiv 2412.19437, December 2024)
    "none": 0,
    "full": 2016,  # Chen et al., "Training Deep Nets with Sublinear Memory Cost" (arXiv 1604.06174)
    "selective": 2022,  # Korthikanti et al. (arXiv 2205.05198, May 2022)
    "cp": 2023,  # context parallelism: ring attention, Liu et al. (arXiv 2310.01889, October 2023)
}


def available(names: tuple[str, ...], year: int) -> tuple[str, ...]:
    """The techniques of ``names`` published by ``year`` (all of them when year is 0)."""
    return tuple(n for n in names if not year or SINCE[n] <= year)


@dataclass(kw_only=True, slots=True)
class Layout:
    tp: int = 0  # tensor parallel (0: search)
    cp: int = 0  # context parallel: chips sharing one sequence (0: search)
    pp: int = 0  # pipeline stages (0: search)
    ep: int = 0  # expert parallel, a divisor of dp (0: search; 1 for dense models)
    dp: int = 0  # data-parallel replicas; 0: every replica the fleet holds
    microbatch_seqs: int = 0  # sequences per micro-batch (0: search 1, 2, 4)
    schedule: str = "auto"  # pipeline schedule: one of SCHEDULES, or 'auto' (search)
    virtual_stages: int = 0  # model chunks per stage, interleaved only (0: search; 1 otherwise)
    # 0: replicated states; 1: optimizer states sharded over the data-parallel group;
    # 2: + gradients; 3: + weights (gathered per micro-batch). None: the lowest stage that fits
    zero: int | None = None
    # 'none' keeps every activation; 'selective' drops norm and SwiGLU outputs and recomputes
    # them (elementwise work only); 'full' keeps layer inputs and reruns the whole forward;
    # 'auto': search
    recompute: str = "auto"
    # The year of the run (0: today). A run's source that names its stack's era fixes what the
    # search may try: no schedule, recomputation mode or context parallelism published later
    # (``SINCE``); a layout that fixes one anyway is an error.
    year: int = 0

    def __post_init__(self) -> None:
        for key in ("tp", "cp", "pp", "ep", "dp", "microbatch_seqs", "virtual_stages"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "an integer >= 0 (0: search/fill)")
        check_choice("schedule", self.schedule, ("auto", *SCHEDULES))
        check(self.virtual_stages <= 1 or self.schedule in ("interleaved", "auto"), "virtual_stages",
              self.virtual_stages, "0 or 1 unless layout.schedule = 'interleaved'")
        if self.zero is not None:
            check_choice("zero", self.zero, ZERO)
        check_choice("recompute", self.recompute, ("auto", *RECOMPUTE))
        check(self.year == 0 or 2016 <= self.year <= 2100, "year", self.year, "0 (today) or a year from 2016")
        if self.year:
            for key, name in (("schedule", self.schedule), ("recompute", self.recompute)):
                check(name == "auto" or SINCE[name] <= self.year, key, name,
                      f"a technique published by layout.year={self.year}: {list(available(SCHEDULES if key == 'schedule' else RECOMPUTE, self.year))}")
            check(self.cp <= 1 or SINCE["cp"] <= self.year, "cp", self.cp,
                  f"1: context parallelism was first published in {SINCE['cp']}, after layout.year={self.year}")

    @property
    def searched(self) -> bool:
        """Whether any field is left to the search."""
        return (0 in (self.tp, self.cp, self.pp, self.ep, self.microbatch_seqs) or self.zero is None
                or "auto" in (self.schedule, self.recompute)
                or (self.schedule == "interleaved" and self.virtual_stages == 0))

    @property
    def chunks(self) -> int:
        """Model chunks per pipeline stage (v): virtual_stages for interleaved, else 1."""
        return max(self.virtual_stages, 1) if self.schedule == "interleaved" else 1

    def bubble_microbatches(self, pp: int, forward: float = 1 / 3, weight_grad: float = 1 / 3) -> float:
        """Pipeline bubble in units of one micro-batch's forward+backward time (module docstring);
        ``forward`` and ``weight_grad``: F and W as shares of that time."""
        f, w = forward, weight_grad
        b = 1 - f - w
        if self.schedule == "1f1b":
            return pp - 1
        if self.schedule == "interleaved":
            return (pp - 1) / self.chunks
        if self.schedule == "zb-h1":
            return (pp - 1) * (f + b - w)
        if self.schedule == "zero-bubble":
            return (pp - 1) * max(f + b - 2 * w, 0.0)
        if self.schedule == "dualpipe":
            return max(pp / 2 - 1, 0) * max(1 + b - 3 * w, 0.0)
        return 0.0

    def in_flight(self, pp: int) -> float:
        """Activations the first stage holds, in units of one micro-batch through the whole model
        (1F1B: pp micro-batches of layers/pp layers each = 1)."""
        if self.schedule == "interleaved":  # Narayanan et al. 2021: 1 + (pp-1)/(pp*v)
            return 1 + (pp - 1) / (pp * self.chunks)
        if self.schedule == "zero-bubble":  # ZB-H2 keeps up to 2pp-1 micro-batches in flight
            return (2 * pp - 1) / pp
        if self.schedule == "dualpipe":
            return (pp + 1) / pp
        return 1.0


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
    sharded over the data-parallel group (``dp * cp`` chips hold the same weights) under ZeRO,
    and in-flight activations (``Layout.in_flight`` micro-batches' worth on the first stage).

    ZeRO-2 shards gradients, ZeRO-3 weights too (one stage's layer gathered at a time: counted
    as 1/layers of the stage's weights on top). DualPipe keeps two copies of the weights
    (DeepSeek-V3 report). The last stage also holds FP32 logits of one micro-batch (counted on
    every stage: a bound). Context parallelism divides activations by ``cp``.
    ``activation_scale`` multiplies the layer activations (``Assumptions.activation_memory_scale``).
    """
    cp = max(layout.cp, 1)
    shards = dp * cp
    dense = model.dense_params_b * 1e9 / (tp * pp)
    experts = model.expert_params_b * 1e9 / (pp * ep)
    sharded = dense / shards + experts / max(shards // ep, 1)
    params = dense + experts
    copies = 2 if layout.schedule == "dualpipe" else 1
    zero = layout.zero or 0
    weights = 2.0 * params * copies
    if zero >= 3:
        weights = 2.0 * (sharded + params * pp / model.layers) * copies
    grads = 2.0 * (sharded if zero >= 2 else params) * copies
    optim = optimizer_bytes_per_param * (sharded if zero >= 1 else params)
    tokens = layout.microbatch_seqs * model.seq_len / cp
    if layout.recompute == "full":
        per_token = 2.0 * model.hidden * model.layers
    else:
        dense_layers = model.layers - model.moe_layers
        sel = layout.recompute == "selective"
        per_token = (dense_layers * activation_bytes_per_token_layer(model, False, sel)
                     + model.moe_layers * activation_bytes_per_token_layer(model, True, sel))
    logits = 4.0 * tokens * model.vocab
    activations = (tokens * per_token * layout.in_flight(pp) * activation_scale + logits) / tp
    return MemoryUse(weights=weights, gradients=grads, optimizer=optim, activations=activations)
