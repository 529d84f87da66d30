"""Multi-head latent attention (DeepSeek-V2/V3), in its plain (not absorbed) form.

For x (B, T, dim), with H heads, n = qk_nope_head_dim, r = qk_rope_head_dim, v = v_head_dim:

    q      = wq(x), or wq_b(q_norm(wq_a(x))) with the low-rank query path     (B, T, H, n + r)
    latent, k_rope = wkv_a(x)                                                 (B, T, kv_lora_rank), (B, T, r)
    k_nope, value = wkv_b(kv_norm(latent))                                    (B, T, H, n), (B, T, H, v)
    key    = [k_nope, rope(k_rope)]  (the one rotary key shared by every head)
    out    = wo(softmax(q key^T / sqrt(n + r)) value)

Per token a cache needs only ``latent`` (normed) and ``rope(k_rope)``: kv_lora_rank + r numbers per
layer. Rotary embeddings use the "rotate half" layout of ``llama.py``; Hugging Face's DeepSeek-V3
stores the rotary rows interleaved (``rope_interleave``), which ``deepseek/hf.py`` permutes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...shape import ModelConfig
from ..llama import RMSNorm, apply_rotary


class MLA(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        a = cfg.mla
        self.n_heads, self.nope, self.rope, self.v_dim = cfg.n_heads, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
        self.kv_lora_rank = a.kv_lora_rank
        q_out = cfg.n_heads * a.qk_head_dim
        self.low_rank_q = bool(a.q_lora_rank)
        # The latent norms' epsilon is fixed at 1e-6, as in DeepSeek's and transformers' code.
        if self.low_rank_q:
            self.wq_a = nn.Linear(cfg.dim, a.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(a.q_lora_rank, 1e-6)
            self.wq_b = nn.Linear(a.q_lora_rank, q_out, bias=False)
        else:
            self.wq = nn.Linear(cfg.dim, q_out, bias=False)
        self.wkv_a = nn.Linear(cfg.dim, a.kv_lora_rank + a.qk_rope_head_dim, bias=False)
        self.kv_norm = RMSNorm(a.kv_lora_rank, 1e-6)
        self.wkv_b = nn.Linear(a.kv_lora_rank, cfg.n_heads * (a.qk_nope_head_dim + a.v_head_dim), bias=False)
        self.wo = nn.Linear(cfg.n_heads * a.v_head_dim, cfg.dim, bias=False)
        self.scale = a.qk_head_dim ** -0.5

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x: (B, T, dim); cos/sin broadcastable to (B, 1, T, r). Causal over the T tokens."""
        B, T, _ = x.shape
        q = self.wq_b(self.q_norm(self.wq_a(x))) if self.low_rank_q else self.wq(x)
        q = q.view(B, T, self.n_heads, self.nope + self.rope).transpose(1, 2)  # (B, H, T, n + r)
        q_nope, q_rope = q.split([self.nope, self.rope], dim=-1)
        latent, k_rope = self.wkv_a(x).split([self.kv_lora_rank, self.rope], dim=-1)
        k_rope = apply_rotary(k_rope.unsqueeze(1), cos, sin)  # (B, 1, T, r): one key for all heads
        kv = self.wkv_b(self.kv_norm(latent)).view(B, T, self.n_heads, self.nope + self.v_dim).transpose(1, 2)
        k_nope, value = kv.split([self.nope, self.v_dim], dim=-1)  # (B, H, T, n), (B, H, T, v)
        q = torch.cat([q_nope, apply_rotary(q_rope, cos, sin)], dim=-1)  # (B, H, T, n + r)
        k = torch.cat([k_nope, k_rope.expand(-1, self.n_heads, -1, -1)], dim=-1)
        out = F.scaled_dot_product_attention(q, k, value, is_causal=True, scale=self.scale)  # (B, H, T, v)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))
