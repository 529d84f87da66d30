"""DeepSeekMoE: shared experts plus routed experts chosen per token, balanced without an auxiliary
loss (DeepSeek-V3 technical report, section 2.1.2).

Routing of a token x (``route``), with E routed experts in G equal groups:

    s = sigmoid(W x)                      affinities, (E,), float32
    c = s + b                             b: the balancing bias, a buffer (chooses, never weighs)
    group score = sum of the 2 best c in the group; keep the ``n_limited_groups`` best groups
    chosen = the ``top_k`` best c among the kept groups' experts
    weight_i = route_scale * s_i / sum(s_chosen)   for i in chosen (normalised, no bias)

Tie rule: among equal scores (groups or experts) the lower index is chosen first (a stable
descending sort, not ``torch.topk``, whose order among ties is unspecified). transformers and
vLLM use ``topk``; exact ties do not occur with trained float weights, and the parity tests use
seeds whose k-th and (k+1)-th scores are apart.

Balancing (``update_bias``): after each optimizer step, with ``loads`` the tokens each expert
received during it (summed over every replica), ``b_i += gamma * sign(mean(loads) - loads_i)``:
overloaded experts become less likely to be chosen, underloaded ones more. An optional small
sequence-wise balance loss (``sequence_balance_loss``, weight ``balance_loss_weight``) guards
against imbalance inside single sequences.

Experts run grouped: the (token, expert) pairs are sorted by expert and each expert multiplies
its rows in one matrix product (a loop over experts, never over tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...shape.deepseek import MoEConfig
from ..llama import FeedForward


def _top(scores: Tensor, k: int) -> Tensor:
    """Indices of the k largest entries along the last dim; ties to the lower index."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]


def route(scores: Tensor, bias: Tensor, cfg: MoEConfig) -> tuple[Tensor, Tensor]:
    """scores: (N, E) sigmoid affinities (float32); bias: (E,). Returns (weights (N, k) float32,
    indices (N, k) int64) as the module docstring defines them."""
    N, E = scores.shape
    choice = scores + bias  # (N, E): used to choose only
    if cfg.n_limited_groups < cfg.n_expert_groups:
        grouped = choice.view(N, cfg.n_expert_groups, cfg.experts_per_group)
        group_scores = grouped.topk(2, dim=-1).values.sum(-1)  # (N, G)
        keep = torch.zeros_like(group_scores, dtype=torch.bool)
        keep.scatter_(1, _top(group_scores, cfg.n_limited_groups), True)
        choice = choice.masked_fill(~keep.repeat_interleave(cfg.experts_per_group, dim=1), float("-inf"))
    indices = _top(choice, cfg.top_k)  # (N, k)
    weights = scores.gather(1, indices)
    weights = weights / (weights.sum(-1, keepdim=True) + 1e-20) * cfg.route_scale
    return weights, indices


def update_bias(bias: Tensor, loads: Tensor, speed: float) -> None:
    """In place: ``bias += speed * sign(mean(loads) - loads)``. ``loads`` (E,): tokens each expert
    received since the last update, summed over every replica, so that all replicas move their
    biases alike."""
    loads = loads.to(device=bias.device, dtype=torch.float32)
    bias.add_(torch.sign(loads.mean() - loads), alpha=speed)


def sequence_balance_loss(scores: Tensor, indices: Tensor, batch: int, k: int) -> Tensor:
    """The report's sequence-wise balance loss (eq. 17-20) without its weight alpha, averaged
    over sequences. scores (B*T, E) sigmoid affinities, indices (B*T, k) chosen experts.
    sum_i f_i P_i with f_i = E / (k T) * #tokens of the sequence sent to i and P_i = the mean
    over the sequence of s_i / sum_j s_j."""
    E = scores.size(1)
    probs = (scores / scores.sum(-1, keepdim=True)).view(batch, -1, E)  # (B, T, E)
    T = probs.size(1)
    counts = torch.zeros(batch, E, device=scores.device)
    chosen = indices.reshape(batch, -1)  # (B, T*k)
    counts.scatter_add_(1, chosen, torch.ones_like(chosen, dtype=counts.dtype))
    f = counts * E / (k * T)  # (B, E)
    return (f * probs.mean(1)).sum(-1).mean()


class Router(nn.Module):
    """The gate: affinity weights (E, dim) and the balancing bias (a float32 buffer, saved with
    the model: a checkpoint restores it)."""

    def __init__(self, dim: int, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, dim))
        self.register_buffer("expert_bias", torch.zeros(cfg.n_routed_experts, dtype=torch.float32))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (N, dim) -> (weights (N, k), indices (N, k), scores (N, E)), float32."""
        scores = torch.sigmoid(F.linear(x.float(), self.weight.float()))
        weights, indices = route(scores, self.expert_bias, self.cfg)
        return weights, indices, scores


class GroupedExperts(nn.Module):
    """E SwiGLU experts stored as stacked weights: w1, w3 (E, hidden, dim), w2 (E, dim, hidden)."""

    def __init__(self, dim: int, hidden: int, n_experts: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, hidden, dim))  # gate
        self.w3 = nn.Parameter(torch.empty(n_experts, hidden, dim))  # up
        self.w2 = nn.Parameter(torch.empty(n_experts, dim, hidden))  # down

    def forward(self, x: Tensor, counts: list[int]) -> Tensor:
        """x: (rows, dim) sorted by expert, ``counts[e]`` rows for expert e -> (rows, dim)."""
        outs = []
        for e, rows in enumerate(x.split(counts)):
            if rows.size(0):
                outs.append((F.silu(rows @ self.w1[e].T) * (rows @ self.w3[e].T)) @ self.w2[e].T)
        return torch.cat(outs) if outs else x.new_zeros(0, x.size(1))


class MoE(nn.Module):
    """The FFN of a DeepSeekMoE layer. ``last_loads``: tokens per routed expert in the last
    forward; ``step_loads``: summed over the training forwards since the last ``update_bias``."""

    def __init__(self, dim: int, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.router = Router(dim, cfg)
        self.experts = GroupedExperts(dim, cfg.expert_ffn_dim, cfg.n_routed_experts)
        self.shared = FeedForward(dim, cfg.expert_ffn_dim * cfg.n_shared_experts) if cfg.n_shared_experts else None
        zeros = torch.zeros(cfg.n_routed_experts, dtype=torch.int64)
        self.register_buffer("last_loads", zeros.clone(), persistent=False)
        self.register_buffer("step_loads", zeros.clone(), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, dim) -> (output (B, T, dim), sequence balance loss times its weight, or None
        when the weight is 0 or not training)."""
        B, T, D = x.shape
        flat = x.reshape(-1, D)  # (N, D)
        weights, indices, scores = self.router(flat)  # (N, k), (N, k), (N, E)
        out, counts = self.experts_output(flat, weights, indices)
        with torch.no_grad():
            self.last_loads.copy_(counts)
            if self.training:
                self.step_loads.add_(counts)
        aux = None
        if self.training and self.cfg.balance_loss_weight > 0:
            aux = self.cfg.balance_loss_weight * sequence_balance_loss(scores, indices, B, self.cfg.top_k)
        return out.view(B, T, D), aux

    def experts_output(self, flat: Tensor, weights: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The expert computation of a routed batch: flat (N, dim), weights and indices (N, k)
        -> (the shared experts' output plus the weighted sum of each token's routed experts (N,
        dim), tokens per routed expert (E,) int64). The (token, slot) pairs are sorted by expert
        once; each expert runs on its contiguous rows; one ``index_add_`` scatters them back."""
        pairs = indices.reshape(-1)  # (N*k,) expert of each (token, slot)
        order = torch.argsort(pairs, stable=True)
        counts = torch.bincount(pairs, minlength=self.cfg.n_routed_experts)  # (E,)
        token = order // self.cfg.top_k  # (N*k,) the token of each sorted pair
        rows = self.experts(flat[token], counts.tolist())  # (N*k, D), grouped by expert
        rows = (rows * weights.reshape(-1)[order, None]).to(flat.dtype)
        out = torch.zeros_like(flat).index_add_(0, token, rows)
        if self.shared is not None:
            out = out + self.shared(flat)
        return out, counts
