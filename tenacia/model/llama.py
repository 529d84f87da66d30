"""A Llama-family decoder: RMSNorm, rotary embeddings, SwiGLU, grouped-query attention, optional
tied embeddings, optional biases on the q/k/v projections (Qwen2). It knows nothing of parallelism, devices or serving; those wrap it.

The one seam for inference engines is ``cache``: when given, each attention layer hands its
rotated queries, keys and values to ``cache.attend(layer, q, k, v)`` (an ``AttentionCache``),
which stores k/v wherever it keeps them (contiguous rows, paged blocks, ...) and returns the
attention output. Without a cache the layer runs plain causal attention over the given tokens.

Rotary embeddings use the "rotate half" layout of Hugging Face's Llama, so HF weights load
without permuting q/k projections.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..shape import ModelConfig


class AttentionCache(Protocol):
    """What an inference engine gives the model to keep keys and values between calls."""

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor | None) -> Tensor:
        """q: (B, H, T, hd); k, v: (B, KVH, T, hd) for the new tokens, already rotated.
        Store k/v, attend over everything cached for each sequence, return (B, H, T, hd).
        ``v`` is None where the cache keeps the values inside the keys (latent attention: the
        "key" is the latent plus the rotary key, and the values are read from the latent)."""
        ...


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotary_table(head_dim: int, max_seq_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (max_seq_len, head_dim), float32, HF "rotate half" layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(max_seq_len, dtype=torch.int64).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, heads, T, hd); cos/sin broadcastable to (B, 1, T, hd)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer, self.n_heads, self.n_kv_heads, self.head_dim = layer, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache | None) -> Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KVH, T, hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            out = cache.attend(self.layer, q, k, v)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=self.n_heads != self.n_kv_heads
            )
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg, layer)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache | None) -> Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, cache)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    def __init__(self, cfg: ModelConfig, init_weights: bool = True):
        """``init_weights=False`` skips the random init, for weights about to be loaded."""
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rotary_table(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if init_weights:
            self.reset_parameters()

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's own signature
        """Casts (``.to(torch.bfloat16)``) leave the rotary tables in float32: rounding them to bf16
        loses precision at long positions."""
        super()._apply(fn, recurse)
        self.rope_cos, self.rope_sin = self.rope_cos.float(), self.rope_sin.float()
        return self

    def reset_parameters(self, seed: int | None = None) -> None:
        """GPT-2 style init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layers),
        biases zero."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        resid_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith(".bias"):
                    p.zero_()
                else:
                    std = resid_std if name.endswith(("wo.weight", "w2.weight")) else 0.02
                    p.copy_(torch.randn(p.shape, generator=gen) * std)

    def forward(self, tokens: Tensor, positions: Tensor | None = None,
                cache: AttentionCache | None = None) -> Tensor:
        """tokens: (B, T) int64; positions: (B, T) or (T,) absolute positions, default 0..T-1.
        Returns logits (B, T, vocab) in float32."""
        B, T = tokens.shape
        if positions is None:
            positions = torch.arange(T, device=tokens.device)
        cos = self.rope_cos[positions].unsqueeze(-3)  # (B or 1, 1, T, hd)
        sin = self.rope_sin[positions].unsqueeze(-3)
        if cos.dim() == 3:
            cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
        h = self.tok_embeddings(tokens)
        for block in self.layers:
            h = block(h, cos, sin, cache)
        return self.output(self.norm(h)).float()

    def loss(self, tokens: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """tokens, targets (B, T) -> (next-token cross-entropy, its parts: ``lm`` alone). The
        training loss every model family has (``DeepSeekV3.loss`` adds more parts)."""
        lm = loss_fn(self(tokens), targets)
        return lm, {"lm": lm.detach()}


def loss_fn(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy. logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
