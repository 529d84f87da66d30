"""The serving layout of a Llama: the same weights, arranged for fast inference.

Training wants one ``nn.Linear`` per projection; serving wants fewer, larger matrix products
and no autograd bookkeeping. ``PackedLlama`` takes a trained ``Llama`` and keeps:

- q, k and v as one fused projection (five matrix products a layer instead of seven), with
  their biases fused the same way when the model has them (Qwen2); a bias-free model passes
  ``None`` and runs no bias op;
- on CPU with MKL (``torch._C.has_mkl``) every projection pre-packed with MKL's GEMM packing
  (``torch.ops.mkl._mkl_reorder_linear_weight``). MKL's plain float32 GEMM is slow for the few
  rows of a decode step (far below its rate on a long prompt); packed, the same product takes
  markedly less time (docs/serving.md, "Recorded observations"), with the same float32 math
  (bit-identical for 16 rows or more, within 1e-6 relative below). The packed buffer does not
  depend on the row count; each call passes its own. A self-check at load time compares packed
  and plain products for several row counts and keeps the plain ones if they disagree;
- given the decode kernels the engine chose (``cpu.kernels.choose``), for the few rows of a
  decode step (<= 16), a second copy of every projection in the panels of
  ``cpu.kernels.SmallLinear`` (gate and up fused), which streams
  the weights from memory faster than MKL does for so few rows, and a path for decode and prefill
  (``PackedBlock.fused``) whose elementwise work runs in fused kernels
  (``kernels=False`` keeps one copy and the torch ops);
- everywhere else (CUDA, Ascend NPU, CPU without MKL) the fused weights with ``F.linear``.

The original module's projection weights are not referenced afterwards: drop the ``Llama`` to
free them. Numerics: the same math in the same dtype as ``Llama.forward`` (norms and rotary in float32);
logits differ only by float32 summation order (~1e-5), so greedy tokens match it.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from ...model.llama import AttentionCache, Llama
from .cpu import kernels as dk
from .cpu.products import PackedLinear, ProductChooser

log = logging.getLogger(__name__)
class PackedBlock:
    def __init__(self, block, layer: int, kernels: dk.Kernels | None, chooser: ProductChooser | None = None):
        a, f = block.attention, block.feed_forward
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = a.n_heads, a.n_kv_heads, a.head_dim
        self.q_size, self.kv_size = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
        self.attn_norm = block.attention_norm.weight.detach()
        self.ffn_norm = block.ffn_norm.weight.detach()
        self.eps = block.attention_norm.eps
        qkv_bias = torch.cat([a.wq.bias, a.wk.bias, a.wv.bias]) if a.wq.bias is not None else None
        linear = lambda w, b=None, **kw: PackedLinear(w, b, kernels=kernels, chooser=chooser, **kw)  # noqa: E731
        self.qkv = linear(torch.cat([a.wq.weight, a.wk.weight, a.wv.weight]), qkv_bias)
        self.wo = linear(a.wo.weight)
        # gate and up stay two products: for long prompts, one fused product is slower (its
        # output no longer fits in cache; docs/serving.md, "Recorded observations")
        # gate and up: in a prefill (and in a decode without the kernels, which fuse them)
        gu_runs = "prefill" if kernels is not None else "both"
        self.gate = PackedLinear(f.w1.weight, chooser=chooser, runs_in=gu_runs)
        self.up = PackedLinear(f.w3.weight, chooser=chooser, runs_in=gu_runs)
        self.down = linear(f.w2.weight)
        # ``fused`` in a decode: gate and up as one product
        self.kernels = kernels
        self.gate_up = linear(torch.cat([f.w1.weight, f.w3.weight]), runs_in="decode") if kernels else None
        self.fast_decode = kernels is not None and self.head_dim % 2 == 0

    def __call__(self, x: Tensor, cos: Tensor, sin: Tensor, cache: AttentionCache) -> Tensor:
        B, T, dim = x.shape
        h = rms_norm(x, self.attn_norm, self.eps)
        qkv = self.qkv(h)
        heads = self.n_heads + self.n_kv_heads
        qk = qkv[..., :self.q_size + self.kv_size].view(B, T, heads, self.head_dim).transpose(1, 2)
        qk = rotate(qk, cos, sin)  # (B, H + KVH, T, hd)
        q, k = qk[:, :self.n_heads], qk[:, self.n_heads:]
        v = qkv[..., self.q_size + self.kv_size:].view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        out = cache.attend(self.layer, q, k, v)  # (B, H, T, hd)
        x = x + self.wo(out.transpose(1, 2).reshape(B, T, self.q_size))
        h = rms_norm(x, self.ffn_norm, self.eps)
        return x + self.down(F.silu(self.gate(h)).mul_(self.up(h)))

    def fused(self, x: Tensor, delta: Tensor | None, cos: Tensor, sin: Tensor, cache: AttentionCache,
              decode: bool) -> Tensor:
        """The same layer with its elementwise work in the decode kernels (``fast_decode``), for
        rows x: (rows, dim) that are one token per sequence (``decode``) or a prefill's prompt
        tokens packed into one row. x is the residual stream before this layer, still missing
        ``delta`` (the previous layer's output; None for the first layer), which is added in place
        here; cos, sin: (rows, hd). Returns this layer's own delta; the caller adds the last one.
        Each product runs the implementation chosen for its row count (``cpu.products``), gate and
        up as one in a decode."""
        rows, hd, q_size, kv_end = x.size(0), self.head_dim, self.q_size, self.q_size + self.kv_size
        qkv_proj, wo, down = self.qkv, self.wo, self.down
        kn = self.kernels
        qkv = qkv_proj(kn.add_rms_norm(x, delta, self.attn_norm, self.eps))  # (rows, q + 2 kv)
        kn.rotary_(qkv, self.n_heads + self.n_kv_heads, hd, cos, sin)  # q and k, in place
        q, k, v = qkv[:, :q_size], qkv[:, q_size:kv_end], qkv[:, kv_end:]
        if decode:  # (B, heads, 1, hd): one token per sequence
            q, k, v = q.view(rows, -1, 1, hd), k.view(rows, -1, 1, hd), v.view(rows, -1, 1, hd)
        else:  # (1, heads, N, hd): the prompt tokens packed into one row
            q, k, v = (t.view(1, rows, -1, hd).transpose(1, 2) for t in (q, k, v))
        out = cache.attend(self.layer, q, k, v).transpose(1, 2).reshape(rows, q_size)
        h = kn.add_rms_norm(x, wo(out), self.ffn_norm, self.eps)
        return down(kn.silu_mul(self.gate_up(h)) if decode else kn.silu_mul_pair(self.gate(h), self.up(h)))

def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm in float32. ``vector_norm`` makes one pass where ``pow().mean()`` (and
    ``F.rms_norm`` on CPU) make several: several times faster on a long prompt (docs/serving.md,
    "Recorded observations"), equal within 2e-6."""
    xf = x.float()
    ms = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_().div_(x.size(-1))
    return (xf * ms.add_(eps).rsqrt_()).to(x.dtype).mul_(weight)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding, "rotate half" layout, in float32 (as ``llama.apply_rotary``)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class PackedLlama:
    """Inference-only view of a ``Llama`` (see module docstring). Call under ``inference_mode``.
    ``kernels``: the decode kernels the engine chose (``cpu.kernels.choose``), or None."""

    def __init__(self, model: Llama, *, kernels: dk.Kernels | None = None, chooser: ProductChooser | None = None):
        self.cfg = model.cfg
        self.embeddings = model.tok_embeddings.weight.detach()
        self.rope_cos, self.rope_sin = model.rope_cos, model.rope_sin
        self.layers = [PackedBlock(b, i, kernels, chooser) for i, b in enumerate(model.layers)]
        self.norm = model.norm.weight.detach()
        self.eps = model.norm.eps
        # the output projection runs on each sequence's last token only: decode-sized
        self.output = PackedLinear(model.output.weight, kernels=kernels, chooser=chooser, runs_in="decode")
        self.dtype = self.embeddings.dtype
        self.packed = any(layer.qkv.packed is not None for layer in self.layers)
        self.fast_decode = all(layer.fast_decode for layer in self.layers)

    def hidden(self, tokens: Tensor, positions: Tensor, cache: AttentionCache) -> Tensor:
        """tokens, positions: (B, T) -> last hidden states (B, T, dim), before the final norm."""
        B, T = tokens.shape
        if T == 1 and B <= dk.MAX_ROWS and self.fast_decode:
            return self._fused(tokens[:, 0], positions[:, 0], cache, decode=True).view(B, 1, -1)
        if B == 1 and self.fast_decode:  # a prefill: the prompts' tokens packed into one row
            return self._fused(tokens[0], positions[0], cache, decode=False).view(1, T, -1)
        cos = self.rope_cos[positions].unsqueeze(-3)  # (B, 1, T, hd)
        sin = self.rope_sin[positions].unsqueeze(-3)
        h = F.embedding(tokens, self.embeddings)
        for layer in self.layers:
            h = layer(h, cos, sin, cache)
        return h

    def _fused(self, tokens: Tensor, positions: Tensor, cache: AttentionCache, decode: bool) -> Tensor:
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # (rows, hd)
        x = F.embedding(tokens, self.embeddings)  # (rows, dim), a new tensor: updated in place below
        delta = None
        for layer in self.layers:
            delta = layer.fused(x, delta, cos, sin, cache, decode)
        return x.add_(delta)

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden: (S, dim) -> float32 logits (S, vocab)."""
        return self.output(rms_norm(hidden, self.norm, self.eps)).float()
