"""The decoder's shape, torch-free: ``ModelConfig`` and the named presets that fill it.

The model (``tenacia.model``), the checkpoints, the server and the planner all read a model's
shape from here; importing it never imports torch, so the planner can size a tenacia model on a
machine without one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check

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
}


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """Shape of the decoder. ``preset`` fills every field left unset (``PRESETS``)."""

    preset: str = "tiny"
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

    def __post_init__(self) -> None:
        check(self.preset in PRESETS, "preset", self.preset, f"one of {', '.join(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        for key in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")
        check(self.dim % self.n_heads == 0, "dim", self.dim, f"a multiple of n_heads={self.n_heads}")
        check(self.head_dim % 2 == 0, "dim", self.dim, "dim / n_heads must be even for rotary embeddings")
        check(self.n_heads % self.n_kv_heads == 0, "n_kv_heads", self.n_kv_heads,
              f"a divisor of n_heads={self.n_heads}")
        check(self.norm_eps > 0, "norm_eps", self.norm_eps, "a positive number")
        check(self.rope_theta > 0, "rope_theta", self.rope_theta, "a positive number")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def num_params(self) -> int:
        """Parameters, counting a tied embedding once."""
        attn = self.dim * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        if self.qkv_bias:
            attn += self.head_dim * (self.n_heads + 2 * self.n_kv_heads)
        layer = attn + 3 * self.dim * self.ffn_dim + 2 * self.dim
        emb = self.vocab_size * self.dim * (1 if self.tie_embeddings else 2)
        return self.n_layers * layer + emb + self.dim
