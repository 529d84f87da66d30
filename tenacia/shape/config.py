"""The decoder's shape, torch-free: ``ModelConfig`` and the named presets that fill it.

The model (``tenacia.model``), the checkpoints, the server and the planner all read a model's
shape from here; importing it never imports torch, so the planner can size a tenacia model on a
machine without one. Two families: ``llama`` (dense, grouped-query attention) and
``deepseek-v3`` (latent attention, mixture of experts, multi-token prediction: its own fields
are the ``mla`` and ``moe`` sections, ``deepseek.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, check
from . import deepseek
from .deepseek import MLAConfig, MoEConfig

FAMILIES = ("llama", deepseek.FAMILY)

PRESETS: dict[str, dict] = {
    # ~4.2M parameters: trains to readable-looking Python in about two minutes on 2 CPU cores.
    "tiny": dict(vocab_size=4096, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_dim=768,
                 norm_eps=1e-5, rope_theta=10000.0, max_seq_len=1024, tie_embeddings=True),
    # ~0.13M parameters: for tests that must run many processes on 2 cores.
    "micro": dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=192,
                  norm_eps=1e-5, rope_theta=10000.0, max_seq_len=512, tie_embeddings=True),
    # HuggingFaceTB/SmolLM2-135M(-Instruct): config.json of the published model.
    "smollm2-135m": dict(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
                         ffn_dim=1536, norm_eps=1e-5, rope_theta=100000.0, max_seq_len=8192,
                         tie_embeddings=True),
    # ~7.8M parameters (~4.2M a token passes through, as many as "tiny"; +2.1M in the MTP
    # module): tiny's width, depth, vocabulary and context; one dense layer, then three layers of
    # 1 shared + 8 routed experts, 2 per token from 2 of 4 groups. Balancing: bias speed 0.01 and
    # sequence balance weight 1e-3, ten times V3's each (V3 balances far more tokens a step);
    # measured in docs/benchmarks.md ("Balancing moe-tiny").
    "moe-tiny": dict(family=deepseek.FAMILY, vocab_size=4096, dim=256, n_layers=4, n_heads=8, n_kv_heads=8,
                     ffn_dim=768, norm_eps=1e-6, rope_theta=10000.0, max_seq_len=1024, tie_embeddings=True,
                     mla=dict(q_lora_rank=128, kv_lora_rank=48, qk_nope_head_dim=32, qk_rope_head_dim=16,
                              v_head_dim=32),
                     moe=dict(n_dense_layers=1, n_routed_experts=8, n_shared_experts=1, top_k=2,
                              n_expert_groups=4, n_limited_groups=2, expert_ffn_dim=256, route_scale=1.0,
                              bias_update_speed=0.01, balance_loss_weight=1e-3),
                     mtp_depth=1, mtp_loss_weight=0.3),
    # deepseek-ai/DeepSeek-V3 (config.json; technical report arXiv 2412.19437): 671B parameters,
    # 37B a token. Context: the 4K of pre-training (the published 128K is YaRN-scaled rotary,
    # which tenacia does not implement). Loss weights of the report's first 10T tokens.
    "deepseek-v3-671b": dict(family=deepseek.FAMILY, vocab_size=129280, dim=7168, n_layers=61, n_heads=128,
                             n_kv_heads=128, ffn_dim=18432, norm_eps=1e-6, rope_theta=10000.0,
                             max_seq_len=4096, tie_embeddings=False,
                             mla=dict(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
                                      qk_rope_head_dim=64, v_head_dim=128),
                             moe=dict(n_dense_layers=3, n_routed_experts=256, n_shared_experts=1, top_k=8,
                                      n_expert_groups=8, n_limited_groups=4, expert_ffn_dim=2048,
                                      route_scale=2.5, bias_update_speed=1e-3, balance_loss_weight=1e-4),
                             mtp_depth=1, mtp_loss_weight=0.3),
}


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """Shape of the decoder. ``preset`` fills every field left unset (``PRESETS``)."""

    preset: str = "tiny"
    family: str | None = None  # "llama" or "deepseek-v3": the preset's; another needs another preset
    vocab_size: int | None = None  # tokens; for a trained tokenizer it must match its vocabulary
    dim: int | None = None  # model width
    n_layers: int | None = None
    n_heads: int | None = None  # query heads
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention when < n_heads)
    ffn_dim: int | None = None  # SwiGLU hidden size
    norm_eps: float | None = None
    rope_theta: float | None = None
    max_seq_len: int | None = None  # longest position the rotary table covers
    tie_embeddings: bool | None = None  # output projection shares the embedding matrix
    qkv_bias: bool = False  # biases on the q, k and v projections (Qwen2); none on o or the MLP
    mla: MLAConfig | None = None  # deepseek-v3: latent attention
    moe: MoEConfig | None = None  # deepseek-v3: the experts and their routing
    mtp_depth: int | None = None  # multi-token prediction modules (deepseek-v3; 0: none)
    mtp_loss_weight: float | None = None  # lambda: their mean loss is added times this

    def __post_init__(self) -> None:
        check(self.preset in PRESETS, "preset", self.preset, f"one of {', '.join(PRESETS)}")
        preset = {"family": "llama", "mtp_depth": 0, "mtp_loss_weight": 0.0, **PRESETS[self.preset]}
        for key, value in preset.items():
            if key not in ("mla", "moe") and getattr(self, key) is None:
                setattr(self, key, value)
        families = ", ".join(f"{name} ({p.get('family', 'llama')})" for name, p in PRESETS.items())
        check(self.family == preset["family"], "family", self.family,
              f"'{preset['family']}', the family of preset '{self.preset}' (presets: {families})")
        for key in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        check(self.norm_eps > 0, "norm_eps", self.norm_eps, "a positive number")
        check(self.rope_theta > 0, "rope_theta", self.rope_theta, "a positive number")
        check(self.mtp_depth >= 0, "mtp_depth", self.mtp_depth, "an integer >= 0")
        check(self.mtp_loss_weight >= 0, "mtp_loss_weight", self.mtp_loss_weight, "a number >= 0")
        if self.is_moe:
            self.mla = _filled(MLAConfig, "mla", self.mla, preset["mla"])
            self.moe = _filled(MoEConfig, "moe", self.moe, preset["moe"])
            check(self.n_kv_heads == self.n_heads, "n_kv_heads", self.n_kv_heads,
                  f"n_heads={self.n_heads} (latent attention gives every head its own key and value)")
            check(self.moe.n_dense_layers <= self.n_layers, "moe.n_dense_layers", self.moe.n_dense_layers,
                  f"at most n_layers={self.n_layers}")
            return
        for key in ("mla", "moe"):
            check(getattr(self, key) is None, key, getattr(self, key),
                  f"unset: family '{self.family}' has no such section")
        check(self.mtp_depth == 0, "mtp_depth", self.mtp_depth, f"0: family '{self.family}' has no MTP modules")
        check(self.dim % self.n_heads == 0, "dim", self.dim, f"a multiple of n_heads={self.n_heads}")
        check(self.head_dim % 2 == 0, "dim", self.dim, "dim / n_heads must be even for rotary embeddings")
        check(self.n_heads % self.n_kv_heads == 0, "n_kv_heads", self.n_kv_heads,
              f"a divisor of n_heads={self.n_heads}")

    @property
    def head_dim(self) -> int:
        """Per-head width of a llama-family model (deepseek-v3: see ``mla``)."""
        return self.dim // self.n_heads

    @property
    def is_moe(self) -> bool:
        return self.family == deepseek.FAMILY

    def num_params(self) -> int:
        """Parameters, counting a tied embedding once (deepseek-v3: of the main model, without the
        MTP modules; ``deepseek.num_params``)."""
        if self.is_moe:
            return deepseek.num_params(self)
        attn = self.dim * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        if self.qkv_bias:
            attn += self.head_dim * (self.n_heads + 2 * self.n_kv_heads)
        layer = attn + 3 * self.dim * self.ffn_dim + 2 * self.dim
        emb = self.vocab_size * self.dim * (1 if self.tie_embeddings else 2)
        return self.n_layers * layer + emb + self.dim

    def num_active_params(self) -> int:
        """Parameters one token passes through, embeddings counted as in ``num_params`` (=
        ``num_params`` for a dense model)."""
        return deepseek.num_active_params(self) if self.is_moe else self.num_params()


def _filled(cls: type, name: str, given: object | None, preset: dict) -> object:
    """Section ``name`` with the fields left unset taken from the preset, checked whole."""
    values = dict(preset)
    if given is not None:
        values.update({k: v for k, v in ((f, getattr(given, f)) for f in preset) if v is not None})
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{name}.{e.field}", e.value, e.allowed) from None
