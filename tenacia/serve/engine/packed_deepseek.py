"""The serving layout of a deepseek-v3 model (``tenacia.model.deepseek``): latent attention in its
absorbed form over a cache of latents, and the mixture of experts.

Latent attention (``mla.py`` has the plain form) for H heads, n = qk_nope_head_dim, r =
qk_rope_head_dim, L = kv_lora_rank, v = v_head_dim; ``wkv_b`` split per head into W_UK (n, L) and
W_UV (v, L):

    entry   = [kv_norm(latent), rope(k_rope)]              (L + r): all the cache keeps a token
    q'      = [q_nope W_UK, rope(q_rope)]                  (H, L + r): W_UK absorbed into the query
    scores  = q' . entry / sqrt(n + r)                     = q_nope . k_nope + q_rope . k_rope
    o       = softmax(scores) . entry[:L]                  (H, L): attention over latents
    out     = wo([o W_UV^T per head])                      W_UV applied after the attention

which is the plain form's attention regrouped (DeepSeek's ``inference/model.py`` "absorb" mode,
vLLM's MLA decode). The cache sees one key head of width L + r whose first L columns are the
value (``kv_cache.CacheSpec.of``); the same absorbed form runs a prefill too (its attention is
then wider than the plain form's, L + r against n + r per head: for ``moe-tiny`` 80 against 48).

The experts run as in training (``moe.route``, the same tie rule; tokens grouped by expert, one
product per expert). The multi-token-prediction modules are not served (no speculative
decoding). Numerics: the same float32 math as ``DeepSeekV3.forward`` in another summation order
(the absorbed products), within ~1e-5 on logits (``tests/serve/test_engine_deepseek.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...model.deepseek import DeepSeekV3
from ...model.deepseek.moe import MoE, route
from ...model.llama import AttentionCache
from .backend import TorchBackend, rms_norm, rotate


class PackedMLA:
    """One layer's latent attention, absorbed (module docstring)."""

    def __init__(self, attn, layer: int, backend: TorchBackend):
        self.layer = layer
        self.H, self.nope, self.rope, self.L = attn.n_heads, attn.nope, attn.rope, attn.kv_lora_rank
        if attn.low_rank_q:
            self.wq_a, self.wq_b = backend.linear(attn.wq_a.weight), backend.linear(attn.wq_b.weight)
            self.q_norm, self.q_eps = attn.q_norm.weight.detach(), attn.q_norm.eps
        else:
            self.wq_a, self.wq_b, self.q_norm = None, backend.linear(attn.wq.weight), None
        self.wkv_a = backend.linear(attn.wkv_a.weight)
        self.kv_norm, self.kv_eps = attn.kv_norm.weight.detach(), attn.kv_norm.eps
        wkv_b = attn.wkv_b.weight.detach().view(self.H, attn.nope + attn.v_dim, self.L)
        self.w_uk = wkv_b[:, :attn.nope].contiguous()  # (H, n, L)
        self.w_uv = wkv_b[:, attn.nope:].contiguous()  # (H, v, L)
        self.wo = backend.linear(attn.wo.weight)

    def __call__(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache, decode: bool) -> Tensor:
        """x: (rows, dim) normed; cos, sin: (rows, r). Returns the attention output (rows, dim)."""
        rows, H = x.size(0), self.H
        q = self.wq_b(rms_norm(self.wq_a(x), self.q_norm, self.q_eps)) if self.wq_a is not None else self.wq_b(x)
        q_nope, q_rope = q.view(rows, H, self.nope + self.rope).split([self.nope, self.rope], dim=-1)
        latent, k_rope = self.wkv_a(x).split([self.L, self.rope], dim=-1)
        entry = torch.cat([rms_norm(latent, self.kv_norm, self.kv_eps), rotate(k_rope, cos, sin)], dim=-1)  # (rows, L + r)
        q_lat = torch.bmm(q_nope.transpose(0, 1), self.w_uk).transpose(0, 1)  # (rows, H, L): W_UK absorbed
        q = torch.cat([q_lat, rotate(q_rope, cos.unsqueeze(1), sin.unsqueeze(1))], dim=-1)  # (rows, H, L + r)
        if decode:  # (B, H, 1, L + r) against (B, 1, 1, L + r): one token per sequence
            q, k = q.unsqueeze(2), entry.view(rows, 1, 1, -1)
        else:  # (1, H, N, L + r) against (1, 1, N, L + r): the prompt tokens packed into one row
            q, k = q.transpose(0, 1).unsqueeze(0), entry.view(1, 1, rows, -1)
        o = cache.attend(self.layer, q, k, None)  # (B, H, 1, L) or (1, H, N, L)
        o = o.reshape(rows, H, self.L) if decode else o[0].transpose(0, 1)  # (rows, H, L)
        out = torch.bmm(o.transpose(0, 1), self.w_uv.transpose(1, 2))  # (H, rows, v): W_UV after attention
        return self.wo(out.transpose(0, 1).reshape(rows, -1))


class PackedFFN:
    """SwiGLU: a dense layer's FFN, or the shared experts."""

    def __init__(self, ffn, backend: TorchBackend):
        self.gate, self.up, self.down = (backend.linear(w.weight) for w in (ffn.w1, ffn.w3, ffn.w2))
        self.backend = backend

    def __call__(self, x: Tensor) -> Tensor:
        return self.down(self.backend.silu_mul_pair(self.gate(x), self.up(x)))


class PackedMoE:
    """Routed experts (grouped by expert, one product each) plus the shared ones."""

    def __init__(self, moe, backend: TorchBackend):
        self.cfg = moe.cfg
        self.router = moe.router.weight.detach().float()
        self.bias = moe.router.expert_bias.detach()
        e = moe.experts
        self.w1, self.w3, self.w2 = (w.detach() for w in (e.w1, e.w3, e.w2))  # (E, hidden, dim), (E, dim, hidden)
        self.shared = PackedFFN(moe.shared, backend) if moe.shared is not None else None

    def __call__(self, x: Tensor) -> Tensor:
        """x: (rows, dim) -> (rows, dim)."""
        weights, indices = route(torch.sigmoid(F.linear(x.float(), self.router)), self.bias, self.cfg)  # (rows, k)
        pairs = indices.reshape(-1)
        order = torch.argsort(pairs, stable=True)
        token = order // self.cfg.top_k  # (rows * k,) the token of each pair, grouped by expert
        counts = torch.bincount(pairs, minlength=self.cfg.n_routed_experts).tolist()
        outs = []
        for e, part in enumerate(x[token].split(counts)):
            if part.size(0):
                outs.append(F.linear(F.silu(F.linear(part, self.w1[e])) * F.linear(part, self.w3[e]), self.w2[e]))
        routed = (torch.cat(outs) * weights.reshape(-1)[order, None]).to(x.dtype)
        out = torch.zeros_like(x).index_add_(0, token, routed)
        return out + self.shared(x) if self.shared is not None else out


class PackedDeepSeekBlock:
    def __init__(self, block, layer: int, backend: TorchBackend):
        self.attn_norm, self.ffn_norm = block.attention_norm.weight.detach(), block.ffn_norm.weight.detach()
        self.eps = block.attention_norm.eps
        self.attention = PackedMLA(block.attention, layer, backend)
        f = block.feed_forward
        self.ffn = PackedMoE(f, backend) if isinstance(f, MoE) else PackedFFN(f, backend)

    def __call__(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache, decode: bool) -> Tensor:
        """x: (rows, dim) residual stream -> the stream after this layer."""
        x = x + self.attention(rms_norm(x, self.attn_norm, self.eps), cos, sin, cache, decode)
        return x + self.ffn(rms_norm(x, self.ffn_norm, self.eps))


class PackedDeepSeek:
    """Inference-only view of a ``DeepSeekV3`` (module docstring), with ``PackedLlama``'s
    interface (``hidden``, ``logits``). Call under ``inference_mode``."""

    def __init__(self, model: DeepSeekV3, backend: TorchBackend):
        self.cfg, self.backend = model.cfg, backend
        self.embeddings = model.tok_embeddings.weight.detach()
        self.rope_cos, self.rope_sin = model.rope_cos, model.rope_sin
        self.layers = [PackedDeepSeekBlock(b, i, backend) for i, b in enumerate(model.layers)]
        self.norm, self.eps = model.norm.weight.detach(), model.norm.eps
        self.output = backend.linear(model.output.weight, runs_in="decode")
        self.dtype = self.embeddings.dtype

    def hidden(self, tokens: Tensor, positions: Tensor, cache: AttentionCache, decode: bool,
               keep: Tensor | None = None) -> Tensor:
        """tokens, positions: (rows,) -> last hidden states (rows, dim), before the final norm;
        ``keep`` (row indices): those rows' alone, as ``PackedLlama.hidden`` (here every row
        runs every layer)."""
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # (rows, r)
        x = F.embedding(tokens, self.embeddings)
        for layer in self.layers:
            x = layer(x, cos, sin, cache, decode)
        return x if keep is None else x[keep]

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden: (S, dim) -> float32 logits (S, vocab)."""
        return self.output(rms_norm(hidden, self.norm, self.eps)).float()
