"""What a forward pass computes with: one backend, chosen once when the engine starts.

``PackedLlama`` runs one forward for a decode step and for a prefill alike, on rows of tokens
``(rows, dim)``, and calls its backend for every operation in it:

- ``linear(weight, bias, runs_in)``: a projection, built once, called with ``(rows, in)``;
- ``add_rms_norm``, ``rotary_``, ``silu_mul``, ``silu_mul_pair``: the elementwise work between
  the products;
- ``decode_attention``: a decode step's new keys and values written to their cache slots and to
  the decode mirror (``mirror.py``), then attention over the mirror (``attention.py`` calls it);
- ``store_rows``: a prefill's new keys (or values) written to their cache slots;
- ``causal_attention``: a prefill's attention for whole new sequences (``attention.py`` calls it);
- ``latent_decode_attention``: the same for a cache whose values are the keys' first columns
  (latent attention: ``kv_cache.CacheSpec``), in torch ops in every backend;
- ``greedy``: each row's token of largest logit (``sampling.Sampler`` calls it).

Two backends, and nothing else decides which ops run:

- ``TorchBackend`` (here): torch ops on any device (CUDA, Ascend NPU through torch_npu, CPU), the
  products as ``F.linear``;
- ``cpu.backend.CpuBackend`` (float32 on a CPU): the products as ``cpu.products.PackedLinear``,
  whose implementation (MKL packed, oneDNN's blocked layout, plain MKL, the kernels' panels) is
  timed on this CPU at start; with the decode kernels of one instruction set
  (``cpu.kernels.choose``), ``cpu.backend.KernelBackend`` also runs the elementwise work and
  the decode attention in them.

``describe()`` is what the start-up line says. Every backend computes the same float32 math in
another summation order (within ~1e-5 of each other on logits; greedy tokens match).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class DecodeRows(Protocol):
    """Where a decode step's keys and values live besides the cache (``mirror.DecodeMirror``)."""

    k: Tensor  # (n_layers, B, KVH, cap, hd)
    v: Tensor | None  # None where the values are in the keys
    lengths: Tensor  # (B,) int64: keys each sequence attends to, its new token included

    def rows(self) -> Tensor: ...  # (B * KVH,) int64: the flat mirror row of each new (sequence, head)
    def bias(self) -> Tensor: ...  # (B, 1, 1, L): 0 where a key may be attended, -inf past it


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


class TorchLinear:
    """``y = x @ weight.T + bias`` with ``F.linear``, for x (rows, in)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None):
        self.weight = weight.detach().contiguous()
        self.bias = bias.detach().contiguous() if bias is not None else None
        self.out_features, self.in_features = self.weight.shape

    def __call__(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class TorchBackend:
    """Torch ops, any device and dtype (module docstring). ``why``: on a CPU, why this backend
    runs rather than the CPU's own (the start-up line says it)."""

    def __init__(self, why: str = ""):
        self.why = why

    # whether a decode step runs gate and up as one product (a third copy of those weights)
    fuse_gate_up = False

    def linear(self, weight: Tensor, bias: Tensor | None = None, runs_in: str = "both"):
        """The product for ``weight`` (out, in) and ``bias`` (out,) or None. ``runs_in``: "both",
        or "decode" / "prefill" where the model calls it in one regime only."""
        return TorchLinear(weight, bias)

    def add_rms_norm(self, x: Tensor, delta: Tensor | None, weight: Tensor, eps: float) -> Tensor:
        """``x += delta`` in place (when given), then return RMSNorm(x) * weight; x: (rows, dim)."""
        if delta is not None:
            x.add_(delta)
        return rms_norm(x, weight, eps)

    def rotary_(self, x: Tensor, heads: int, head_dim: int, cos: Tensor, sin: Tensor) -> None:
        """Rotary embedding in place on the first ``heads`` heads of each row of ``x`` (rows, >=
        heads * head_dim), "rotate half" layout; cos, sin: (rows, head_dim)."""
        part = x[:, :heads * head_dim].view(x.size(0), heads, head_dim)
        part.copy_(rotate(part, cos.unsqueeze(1), sin.unsqueeze(1)))

    def silu_mul(self, gate_up: Tensor) -> Tensor:
        """gate_up (rows, 2n) = [gate | up] -> silu(gate) * up, (rows, n)."""
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate).mul_(up)

    def silu_mul_pair(self, gate: Tensor, up: Tensor) -> Tensor:
        """gate, up (rows, n) -> silu(gate) * up."""
        return F.silu(gate).mul_(up)

    def decode_attention(self, layer: int, q: Tensor, k: Tensor, v: Tensor, cache_k: Tensor, cache_v: Tensor,
                         slots: Tensor, mirror: DecodeRows) -> Tensor:
        """One new token per sequence. q: (B, H, 1, hd); k, v: (B, KVH, 1, hd), rotated; cache_k,
        cache_v: this layer's (slots, KVH, hd); slots: (B,) int64. Writes k and v to their cache
        slots and mirror rows, and returns attention over each sequence's keys, (B, H, 1, hd).
        The query heads that share a key/value head attend as one group ``(B, KVH, H / KVH, hd)``:
        the same result as repeating the heads, in less time on CPU (docs/serving.md, "Recorded
        observations")."""
        B, KVH, _, hd = k.shape
        H = q.size(1)
        new_k, new_v = k[:, :, 0], v[:, :, 0]  # (B, KVH, hd)
        cache_k.index_copy_(0, slots, new_k)
        cache_v.index_copy_(0, slots, new_v)
        mk, mv = mirror.k[layer], mirror.v[layer]  # (B, KVH, cap, hd)
        rows = mirror.rows()
        mk.view(-1, hd).index_copy_(0, rows, new_k.reshape(-1, hd))
        mv.view(-1, hd).index_copy_(0, rows, new_v.reshape(-1, hd))
        bias = mirror.bias()
        L = bias.size(-1)
        qg = q.reshape(B, KVH, H // KVH, hd)  # heads k*G .. k*G+G-1 read key/value head k
        out = F.scaled_dot_product_attention(qg, mk[:, :, :L], mv[:, :, :L], attn_mask=bias)
        return out.view(B, H, 1, hd)

    def store_rows(self, store: Tensor, slots: Tensor, rows: Tensor) -> None:
        """A prefill's new keys or values into the cache: ``store`` (slots, KVH, d), one layer's;
        ``slots`` (N,) int64; ``rows`` (N, KVH, d), a view of the q/k/v product is fine."""
        store.index_copy_(0, slots, rows)

    def causal_attention(self, q: Tensor, k: Tensor, v: Tensor, offset: int, n: int, count: int,
                         scale: float | None) -> Tensor:
        """Causal attention for ``count`` packed sequences of ``n`` new tokens each, none cached
        before them, starting at ``offset`` of a prefill's packed row, as one batched call. q:
        (1, H, N, kd); k: (1, KVH, N, kd); v: (1, KVH, N, vd), possibly a view of k. Returns (1, H,
        count * n, vd)."""
        end = offset + n * count
        H, KVH, kd, vd = q.size(1), k.size(1), q.size(3), v.size(3)
        qb = q[0, :, offset:end].view(H, count, n, kd).transpose(0, 1)  # (count, H, n, kd)
        kb = k[0, :, offset:end].view(KVH, count, n, kd).transpose(0, 1)
        vb = v[0, :, offset:end].unflatten(1, (count, n)).transpose(0, 1)  # (count, KVH, n, vd); v may be a view of k
        out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=H != KVH, scale=scale)
        return out.transpose(0, 1).reshape(1, H, count * n, vd)

    def prefix_attention(self, q: Tensor, k: Tensor, v: Tensor, start: int, mask: Tensor, scale: float | None) -> Tensor:
        """Causal attention for ``count`` sequences of ``n`` new tokens each after ``start`` cached
        ones (a cached prefix, or a long prompt's earlier chunks). q: (count, H, n, kd); k:
        (count, KVH, start + n, kd), v: (count, KVH, start + n, vd), possibly a view of k; mask:
        (n, start + n), True where new token i may see key j (j <= start + i). Returns (count, H,
        n, vd)."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.size(1) != k.size(1), scale=scale)

    def latent_decode_attention(self, layer: int, q: Tensor, kv: Tensor, cache_kv: Tensor, slots: Tensor,
                                mirror: DecodeRows, value_dim: int, scale: float | None) -> Tensor:
        """One new token per sequence, where one stored entry per token is the key of every head
        and its first ``value_dim`` columns the value (latent attention, absorbed form). q: (B, H,
        1, D); kv: (B, 1, 1, D); cache_kv: this layer's (slots, 1, D); slots: (B,) int64. Writes
        kv to its cache slot and mirror row; returns attention over each sequence's entries, (B,
        H, 1, value_dim), all heads of a sequence as one group against its one key head."""
        B, H, _, D = q.shape
        new = kv[:, :, 0]  # (B, 1, D)
        cache_kv.index_copy_(0, slots, new)
        mk = mirror.k[layer]  # (B, 1, cap, D)
        mk.view(-1, D).index_copy_(0, mirror.rows(), new.reshape(-1, D))
        bias = mirror.bias()
        keys = mk[:, :, :bias.size(-1)]
        out = F.scaled_dot_product_attention(q.reshape(B, 1, H, D), keys, keys[..., :value_dim], attn_mask=bias,
                                             scale=scale)  # (B, 1, H, value_dim)
        return out.view(B, H, 1, value_dim)

    def greedy(self, logits: Tensor) -> Tensor:
        """(rows, vocab) logits -> (rows,) int64, each row's first column of its largest value."""
        return logits.max(dim=1).indices

    def arrange_decode(self, model) -> None:
        """Set how ``model`` (a ``PackedLlama``, its ``decode_stack`` None) runs a decode step:
        here layer by layer; the CPU kernels may give it one call for all its decoder layers
        (``cpu.decode_stack.DecodeStack``), chosen by timing (``cpu.decode_path``)."""

    def arrange_prefill(self, model) -> None:
        """Set how ``model``'s (a ``PackedLlama``) prefill products share the threads: here as
        each product does; the CPU kernels may deal them the rows instead (``cpu.prefill_path``)."""

    def describe(self) -> tuple[str, str]:
        """(decode kernels, products) for the start-up line; "" where not applicable."""
        return (f"off ({self.why})" if self.why else ""), ""
