"""Model descriptions for planning: dense or mixture-of-experts shapes, and named presets.

A ``ModelSpec`` holds what the planner needs from a model, not its weights: parameter counts
(total and activated per token), depth, width, attention shape (for attention FLOPs and KV-cache
size), the expert layout of MoE layers, and the published run's token count and batch, which a
plan uses unless told otherwise. ``preset`` (default ``deepseek-v3``) fills every field left
unset, as in ``tenacia.shape.ModelConfig``; set it to ``""`` to give every field.

``from_shape`` describes any model tenacia itself trains or serves (a ``tenacia.shape``
``ModelConfig``: one of its presets, a run directory's ``[model]``, a Hugging Face config.json),
so the planner sizes the same model the rest of tenacia runs, without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check, check_finite
from ..shape import ModelConfig
from ..shape.deepseek import num_mtp_params

PRESETS: dict[str, dict] = {
    # DeepSeek-V3 technical report and its config.json: 61 layers (first 3 dense), MLA attention
    # (q/k head dim 128+64, v head dim 128, cached latent 512+64 per token and layer), 256 routed
    # + 1 shared experts of width 2048, top-8 routing limited to 4 nodes; 14.8T tokens at a final
    # batch of 15,360 sequences of 4,096. extra_activated_params_b: the multi-token-prediction
    # module run in training (one MoE block ~0.585B activated + 2h x h projection 0.103B + the
    # shared output head 0.927B), derived from config.json.
    "deepseek-v3": dict(
        total_params_b=671.0, activated_params_b=37.0, layers=61, hidden=7168, ffn=18432,
        heads=128, head_dim=192, v_head_dim=128, kv_heads=128, kv_dim=576, vocab=129280,
        moe_layers=58, experts=256, shared_experts=1, experts_per_token=8, expert_ffn=2048,
        routing_max_groups=4, extra_activated_params_b=1.6, mtp_depth=1, seq_len=4096,
        train_tokens=14.8e12, global_batch_seqs=15360),
    # Llama 3 paper (405B): 126 layers, width 16,384, FFN 53,248, 128 heads with 8 KV heads of
    # 128, vocabulary 128,256; pre-trained on 15.6T tokens at 8,192 context, 16M-token batches.
    "llama-3-405b": dict(
        total_params_b=405.0, activated_params_b=405.0, layers=126, hidden=16384, ffn=53248,
        heads=128, head_dim=128, v_head_dim=128, kv_heads=8, kv_dim=0, vocab=128256,
        moe_layers=0, experts=0, shared_experts=0, experts_per_token=0, expert_ffn=0,
        routing_max_groups=0, extra_activated_params_b=0.0, seq_len=8192,
        train_tokens=15.6e12, global_batch_seqs=2048),
    # Megatron-LM's GPT benchmark models (Korthikanti et al. 2022, arXiv 2205.05198, Table 3;
    # the MFU table of Megatron-LM's README at commit 2e90a342): vocabulary 51,200, sequence
    # 2,048, tied input/output embedding (its output matmul counted as extra activated
    # parameters), 4h GELU MLP written as the SwiGLU width 8h/3 with the same parameter count.
    # Parameters: 12 l h^2 + V h. No published run length: plans give tokens and batch.
    "gpt-22b": dict(
        total_params_b=22.06, activated_params_b=22.06, layers=48, hidden=6144, ffn=16384,
        heads=64, head_dim=96, v_head_dim=96, kv_heads=64, kv_dim=0, vocab=51200,
        moe_layers=0, experts=0, shared_experts=0, experts_per_token=0, expert_ffn=0,
        routing_max_groups=0, extra_activated_params_b=0.315, seq_len=2048,
        train_tokens=0.0, global_batch_seqs=0),
    "gpt-175b": dict(
        total_params_b=174.6, activated_params_b=174.6, layers=96, hidden=12288, ffn=32768,
        heads=96, head_dim=128, v_head_dim=128, kv_heads=96, kv_dim=0, vocab=51200,
        moe_layers=0, experts=0, shared_experts=0, experts_per_token=0, expert_ffn=0,
        routing_max_groups=0, extra_activated_params_b=0.629, seq_len=2048,
        train_tokens=0.0, global_batch_seqs=0),
    "gpt-530b": dict(
        total_params_b=529.5, activated_params_b=529.5, layers=105, hidden=20480, ffn=54613,
        heads=128, head_dim=160, v_head_dim=160, kv_heads=128, kv_dim=0, vocab=51200,
        moe_layers=0, experts=0, shared_experts=0, experts_per_token=0, expert_ffn=0,
        routing_max_groups=0, extra_activated_params_b=1.049, seq_len=2048,
        train_tokens=0.0, global_batch_seqs=0),
    "gpt-1t": dict(
        total_params_b=1007.9, activated_params_b=1007.9, layers=128, hidden=25600, ffn=68267,
        heads=160, head_dim=160, v_head_dim=160, kv_heads=160, kv_dim=0, vocab=51200,
        moe_layers=0, experts=0, shared_experts=0, experts_per_token=0, expert_ffn=0,
        routing_max_groups=0, extra_activated_params_b=1.311, seq_len=2048,
        train_tokens=0.0, global_batch_seqs=0),
    # A GUESS, not a published model: R2's size was reported only by unverified press rumour
    # (about 1.2T total, 78B activated). Shapes are DeepSeek-V3's family scaled to those counts
    # (width 8,192, 72 layers with 3 dense, 192 routed experts of width 3,584, top-8); tokens
    # (20T) and batch are guesses too. Use it to ask "what if", never as a fact.
    "r2-guess": dict(
        total_params_b=1200.0, activated_params_b=78.0, layers=72, hidden=8192, ffn=24576,
        heads=128, head_dim=192, v_head_dim=128, kv_heads=128, kv_dim=576, vocab=129280,
        moe_layers=69, experts=192, shared_experts=1, experts_per_token=8, expert_ffn=3584,
        routing_max_groups=4, extra_activated_params_b=2.0, mtp_depth=1, seq_len=4096,
        train_tokens=20e12, global_batch_seqs=15360),
}


@dataclass(kw_only=True, slots=True)
class ModelSpec:
    """Shape of a model for planning. Parameters in billions; widths in elements."""

    preset: str = "deepseek-v3"  # a key of PRESETS, or "" to give every field yourself
    total_params_b: float | None = None  # all parameters, experts included
    activated_params_b: float | None = None  # parameters one token passes through (= total for dense)
    layers: int | None = None
    hidden: int | None = None  # model width
    ffn: int | None = None  # SwiGLU width of a dense layer
    heads: int | None = None  # query heads
    head_dim: int | None = None  # query/key width per head
    v_head_dim: int | None = None  # value width per head
    kv_heads: int | None = None  # key/value heads (grouped-query attention when < heads)
    kv_dim: int | None = None  # cached elements per token and layer; 0: 2 * kv_heads * head_dim
    vocab: int | None = None
    moe_layers: int | None = None  # layers whose FFN is a mixture of experts (0 for dense)
    experts: int | None = None  # routed experts per MoE layer
    shared_experts: int | None = None  # experts every token passes through
    experts_per_token: int | None = None  # top-k routing
    expert_ffn: int | None = None  # SwiGLU width of one expert
    routing_max_groups: int | None = None  # node-limited routing: a token reaches at most this
    # many scale-up domains (DeepSeek-V3: 4); 0: unlimited
    extra_activated_params_b: float | None = None  # run in training only (e.g. MTP modules)
    # multi-token-prediction depths run in training, each a pass through the output head (counted
    # in extra_activated_params_b): the head runs 1 + mtp_depth times a token. 0 when neither
    # given nor set by the preset (deepseek-v3, r2-guess: 1)
    mtp_depth: int | None = None
    seq_len: int | None = None  # training sequence length
    train_tokens: float | None = None  # the published run's token count (a plan's default; 0: none)
    global_batch_seqs: int | None = None  # the published run's batch in sequences (a plan's default; 0: none)

    def __post_init__(self) -> None:
        if self.preset:
            check(self.preset in PRESETS, "preset", self.preset,
                  f"one of {', '.join(PRESETS)}, or \"\" with every field given")
            for key, value in PRESETS[self.preset].items():
                if getattr(self, key) is None:
                    setattr(self, key, value)
        if self.mtp_depth is None:
            self.mtp_depth = 0
        for key in self.__slots__:
            if key != "preset":
                check(getattr(self, key) is not None, key, None,
                      "a value (or a model.preset that fills it)")
        check_finite(self)
        for key in ("total_params_b", "activated_params_b", "layers", "hidden", "ffn", "heads",
                    "head_dim", "v_head_dim", "kv_heads", "vocab", "seq_len"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive number")
        for key in ("kv_dim", "moe_layers", "experts", "shared_experts", "experts_per_token",
                    "expert_ffn", "routing_max_groups", "extra_activated_params_b", "mtp_depth", "train_tokens",
                    "global_batch_seqs"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "a number >= 0")
        check(self.activated_params_b <= self.total_params_b, "activated_params_b",
              self.activated_params_b, f"at most total_params_b={self.total_params_b}")
        check(self.heads % self.kv_heads == 0, "kv_heads", self.kv_heads,
              f"a divisor of heads={self.heads}")
        check(self.moe_layers <= self.layers, "moe_layers", self.moe_layers,
              f"at most layers={self.layers}")
        if self.moe_layers:
            check(self.experts > 0 and self.expert_ffn > 0, "experts", self.experts,
                  "a positive count (with a positive expert_ffn) when moe_layers > 0")
            check(0 < self.experts_per_token <= self.experts, "experts_per_token",
                  self.experts_per_token, f"between 1 and experts={self.experts}")
            check(self.expert_params_b < self.total_params_b, "total_params_b",
                  self.total_params_b,
                  f"more than the routed-expert parameters the shape implies ({self.expert_params_b:.1f}B)")
        else:
            check(self.activated_params_b == self.total_params_b, "activated_params_b",
                  self.activated_params_b, "equal to total_params_b for a dense model (moe_layers = 0)")

    @property
    def is_moe(self) -> bool:
        return self.moe_layers > 0

    @property
    def expert_params_b(self) -> float:
        """Routed-expert parameters (sharded by expert parallelism)."""
        return self.moe_layers * self.experts * 3 * self.hidden * self.expert_ffn / 1e9

    @property
    def dense_params_b(self) -> float:
        """Everything else: attention, shared experts, dense FFNs, embeddings."""
        return self.total_params_b - self.expert_params_b

    @property
    def routed_activated_params_b(self) -> float:
        """Routed-expert parameters one token passes through."""
        return self.moe_layers * self.experts_per_token * 3 * self.hidden * self.expert_ffn / 1e9

    @property
    def matmul_params(self) -> float:
        """Parameters whose matmuls run per token in training: activated, without the input
        embedding (a lookup), plus modules run in training only."""
        return (self.activated_params_b + self.extra_activated_params_b) * 1e9 - self.vocab * self.hidden

    @property
    def head_params(self) -> float:
        """Output-head parameters a token's training matmuls pass through: vocab x hidden, once
        for the next token and once per multi-token-prediction depth (part of ``matmul_params``)."""
        return self.vocab * self.hidden * (1 + self.mtp_depth)

    def attention_flops_fwd(self, context: float) -> float:
        """Forward FLOPs of the attention scores and weighted sum for one token that attends to
        ``context`` earlier tokens, over all layers (QK^T and AV, 2 FLOPs per multiply-add)."""
        return self.layers * 2 * self.heads * (self.head_dim + self.v_head_dim) * context

    def decode_attention_flops(self, context: float) -> float:
        """Forward attention FLOPs of one decoded token over ``context`` cached tokens, all layers.
        A latent cache (``kv_dim`` below 2 kv_heads head_dim: MLA) is attended in its absorbed
        form, as FlashMLA does: every head scores against the cached latent (``kv_dim`` wide)
        and sums the latents, so both products are about ``kv_dim`` wide (DeepSeek-V3: 576 and
        512, counted as 2 x 576, 6% over). Otherwise as ``attention_flops_fwd``."""
        if self.is_mla:
            return self.layers * 2 * self.heads * 2 * self.kv_dim * context
        return self.attention_flops_fwd(context)

    @property
    def is_mla(self) -> bool:
        """Whether attention caches a latent (``kv_dim`` below 2 kv_heads head_dim: DeepSeek's
        multi-head latent attention) rather than every key and value head (MHA, GQA)."""
        return bool(self.kv_dim) and self.kv_dim < 2 * self.kv_heads * self.head_dim

    @property
    def kv_elements_per_token(self) -> int:
        """Cached key/value elements per token, all layers."""
        per_layer = self.kv_dim or 2 * self.kv_heads * self.head_dim
        return self.layers * per_layer


def from_shape(cfg: ModelConfig) -> dict:
    """``ModelSpec`` fields of a tenacia model shape (a dense Llama-family decoder, or the
    deepseek-v3 family). It has no published run, so ``train_tokens`` and ``global_batch_seqs`` are
    0: a plan gives them. A tied output projection is stored once but still runs per token: it is
    counted as ``extra_activated_params_b`` so that the matmul work includes it; so are the MTP
    modules run in training, with their second pass through the shared output head. DeepSeek's
    expert groups are its nodes: a token's ``n_limited_groups`` are ``routing_max_groups``."""
    head = cfg.vocab_size * cfg.dim
    tied = head if cfg.tie_embeddings else 0
    common = dict(preset="", total_params_b=cfg.num_params() / 1e9, activated_params_b=cfg.num_active_params() / 1e9,
                  layers=cfg.n_layers, hidden=cfg.dim, ffn=cfg.ffn_dim, heads=cfg.n_heads, vocab=cfg.vocab_size,
                  seq_len=cfg.max_seq_len, train_tokens=0.0, global_batch_seqs=0)
    if cfg.is_moe:
        a, m = cfg.mla, cfg.moe
        mtp = num_mtp_params(cfg, active=True) + head if cfg.mtp_depth else 0
        return dict(common, head_dim=a.qk_head_dim, v_head_dim=a.v_head_dim, kv_heads=cfg.n_heads,
                    kv_dim=a.cache_dim, moe_layers=cfg.n_layers - m.n_dense_layers, experts=m.n_routed_experts,
                    shared_experts=m.n_shared_experts, experts_per_token=m.top_k, expert_ffn=m.expert_ffn_dim,
                    routing_max_groups=m.n_limited_groups, extra_activated_params_b=(tied + mtp) / 1e9,
                    mtp_depth=cfg.mtp_depth)
    return dict(common, head_dim=cfg.head_dim, v_head_dim=cfg.head_dim, kv_heads=cfg.n_kv_heads, kv_dim=0,
                moe_layers=0, experts=0, shared_experts=0, experts_per_token=0, expert_ffn=0,
                routing_max_groups=0, extra_activated_params_b=tied / 1e9, mtp_depth=0)
