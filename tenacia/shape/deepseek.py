"""The ``deepseek-v3`` family's own shape, torch-free: attention (``MLAConfig``), experts
(``MoEConfig``) and the parameter counts the planner reads.

A ``ModelConfig`` of this family (``family = "deepseek-v3"``) carries both sections; its common
fields keep their meaning: ``dim``, ``n_layers`` (main-model layers, without the multi-token
prediction modules), ``n_heads``, ``ffn_dim`` (the SwiGLU width of the first, dense layers),
``vocab_size``, ``norm_eps``, ``rope_theta``, ``max_seq_len``, ``tie_embeddings``. ``n_kv_heads``
equals ``n_heads``: every head gets its own key and value, up-projected from the one latent.

A section left partly unset in a config file or override is filled from the preset (as the other
model fields are); its checks run once every field is set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

from ..config import check

FAMILY = "deepseek-v3"


def _complete(section: object) -> bool:
    return all(getattr(section, f.name) is not None for f in dataclasses.fields(section))


@dataclass(kw_only=True, slots=True)
class MLAConfig:
    """Multi-head latent attention (DeepSeek-V2/V3): keys and values come from one compressed
    latent per token (``kv_lora_rank``) plus one rotary key shared by all heads
    (``qk_rope_head_dim``); that pair is all a cache has to keep."""

    q_lora_rank: int | None = None  # queries through a rank-r bottleneck; 0: one plain projection
    kv_lora_rank: int | None = None  # width of the cached key/value latent
    qk_nope_head_dim: int | None = None  # per-head query/key width without position
    qk_rope_head_dim: int | None = None  # per-head query width, and the shared key's, with rotary
    v_head_dim: int | None = None  # per-head value width

    def __post_init__(self) -> None:
        if not _complete(self):
            return
        check(self.q_lora_rank >= 0, "q_lora_rank", self.q_lora_rank, "an integer >= 0 (0: no low-rank query path)")
        for key in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        check(self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", self.qk_rope_head_dim,
              "an even number (rotary embeddings rotate pairs)")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def cache_dim(self) -> int:
        """Cached elements per token and layer: the latent and the shared rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


@dataclass(kw_only=True, slots=True)
class MoEConfig:
    """DeepSeekMoE: dense first layers, then layers whose FFN is ``n_shared_experts`` experts every
    token passes through plus ``top_k`` of ``n_routed_experts`` chosen per token (sigmoid
    affinities, group-limited, balanced by a per-expert bias; see ``tenacia.model.deepseek.moe``)."""

    n_dense_layers: int | None = None  # first layers with a dense FFN (width ModelConfig.ffn_dim)
    n_routed_experts: int | None = None
    n_shared_experts: int | None = None
    top_k: int | None = None  # routed experts per token
    n_expert_groups: int | None = None  # experts split into this many equal groups (V3: nodes)
    n_limited_groups: int | None = None  # a token's experts come from at most this many groups
    expert_ffn_dim: int | None = None  # SwiGLU width of one expert (routed or shared)
    route_scale: float | None = None  # the normalised combine weights are multiplied by it
    bias_update_speed: float | None = None  # gamma: bias step per update, sign of the load error
    balance_loss_weight: float | None = None  # alpha of the sequence-wise balance loss (0: off)

    def __post_init__(self) -> None:
        if not _complete(self):
            return
        for key in ("n_dense_layers", "n_shared_experts"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "an integer >= 0")
        for key in ("n_routed_experts", "top_k", "n_expert_groups", "n_limited_groups", "expert_ffn_dim"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        check(self.n_routed_experts % self.n_expert_groups == 0 and self.experts_per_group >= 2,
              "n_expert_groups", self.n_expert_groups,
              f"a divisor of n_routed_experts={self.n_routed_experts} leaving at least 2 experts a "
              "group (a group scores by its two best experts)")
        check(self.n_limited_groups <= self.n_expert_groups, "n_limited_groups", self.n_limited_groups,
              f"at most n_expert_groups={self.n_expert_groups}")
        check(self.top_k <= self.n_limited_groups * self.experts_per_group, "top_k", self.top_k,
              f"at most the experts of n_limited_groups groups ({self.n_limited_groups * self.experts_per_group})")
        for key in ("route_scale", "bias_update_speed", "balance_loss_weight"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")

    @property
    def experts_per_group(self) -> int:
        return self.n_routed_experts // self.n_expert_groups


class Shape(Protocol):
    """The fields of ``config.ModelConfig`` the counts read (a protocol, so this module, which
    ``config.py`` builds on, does not import it back)."""

    dim: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    vocab_size: int
    tie_embeddings: bool
    mtp_depth: int
    mla: MLAConfig
    moe: MoEConfig


def _attention_params(cfg: Shape) -> int:
    a, h = cfg.mla, cfg.n_heads
    q = cfg.dim * h * a.qk_head_dim if not a.q_lora_rank else (
        cfg.dim * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * h * a.qk_head_dim)
    kv = cfg.dim * a.cache_dim + a.kv_lora_rank + a.kv_lora_rank * h * (a.qk_nope_head_dim + a.v_head_dim)
    return q + kv + h * a.v_head_dim * cfg.dim


def _moe_params(cfg: Shape, experts: int) -> int:
    """An MoE FFN with ``experts`` routed experts counted, plus the shared ones and the router."""
    m = cfg.moe
    return (experts + m.n_shared_experts) * 3 * cfg.dim * m.expert_ffn_dim + m.n_routed_experts * cfg.dim


def _layer_params(cfg: Shape, moe: bool, experts: int) -> int:
    ffn = _moe_params(cfg, experts) if moe else 3 * cfg.dim * cfg.ffn_dim
    return _attention_params(cfg) + ffn + 2 * cfg.dim


def num_params(cfg: Shape) -> int:
    """Parameters of the main model (a tied embedding once), without the MTP modules: the figure
    published as a model's size (DeepSeek-V3: 671B). The balancing biases are buffers, not counted."""
    dense, moe = cfg.moe.n_dense_layers, cfg.n_layers - cfg.moe.n_dense_layers
    layers = dense * _layer_params(cfg, False, 0) + moe * _layer_params(cfg, True, cfg.moe.n_routed_experts)
    return layers + cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2) + cfg.dim


def num_active_params(cfg: Shape) -> int:
    """Main-model parameters one token passes through: all but the routed experts it is not sent
    to, embeddings counted as ``num_params`` counts them (DeepSeek's own 36.6B for V3 leaves the
    input embedding out, a lookup: subtract ``vocab_size * dim`` for that figure)."""
    dense, moe = cfg.moe.n_dense_layers, cfg.n_layers - cfg.moe.n_dense_layers
    layers = dense * _layer_params(cfg, False, 0) + moe * _layer_params(cfg, True, cfg.moe.top_k)
    return layers + cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2) + cfg.dim


def num_mtp_params(cfg: Shape, *, active: bool = False) -> int:
    """Parameters of the multi-token-prediction modules beyond the main model's (each: two input
    norms, the 2d -> d projection, one MoE layer, an output norm; embedding and head are shared).
    ``active``: the routed experts one token passes through only."""
    experts = cfg.moe.top_k if active else cfg.moe.n_routed_experts
    per = 3 * cfg.dim + 2 * cfg.dim * cfg.dim + _layer_params(cfg, True, experts)
    return cfg.mtp_depth * per
