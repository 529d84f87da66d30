"""A paged key/value cache of bounded size, and the attention over it.

Memory is ``num_blocks`` blocks of ``block_size`` token slots per layer, allocated when the engine
starts and never grown. A sequence holds a list of blocks (its block table); token ``p`` of a
sequence lives in slot ``block_table[p // block_size] * block_size + p % block_size``.

``PagedKVCache`` is the ``AttentionCache`` the model calls from every layer. Before each forward
the runner hands it the step's layout with ``begin_prefill`` or ``begin_decode``:

- prefill: the new tokens of several sequences are packed into one row ``(1, N)``; attention runs
  per sequence, causal, over its cached prefix (non-empty when a long prompt is chunked) plus its
  new tokens, so no compute is spent on padding (neighbouring new sequences of equal length run
  as one batched call);
- decode: one new token per sequence ``(B, 1)``. Attention reads a *decode mirror*: the running
  batch's keys and values copied out of their blocks into one contiguous ``(B, cap)`` row per
  sequence, for every layer at once. While the batch stays the same (the same sequences, each one
  token longer than at the last decode step) each step only appends its new token to the mirror
  as well as to its block; any other change (a sequence joins, leaves or is preempted, a prefill
  ran, a row is full) rebuilds the mirror with one gather from the blocks. Without it every
  layer gathered its context from the blocks at every step: ~130 MB copied per step of 16
  sequences. The mirror holds no more than those per-step gathers did (the batch's contexts,
  padded to the longest plus ``MIRROR_HEADROOM`` tokens) and is freed with the batch. Positions
  past a sequence's own length are masked out. The query heads that share a key/value head
  attend as one group of queries ``(B, KVH, H / KVH, hd)``: the same result as grouped-query
  attention with the heads repeated, in less time on CPU (docs/serving.md, "Recorded
  observations"). Given the engine's ``decode_kernels.Kernels`` (float32 on a CPU),
  ``Kernels.decode_attention`` reads each sequence's own keys in the mirror instead: no
  padded positions, no mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .block_pool import BlockPool
from .cpu import kernels as dk


@dataclass(slots=True)
class PrefillLayout:
    """New tokens of several sequences packed into one row."""

    slots: Tensor  # (N,) int64: cache slot of every new token
    seq_lens: list[int]  # new tokens per sequence; they sum to N
    starts: list[int]  # tokens already cached per sequence (0 unless a prompt is chunked)
    context_slots: list[Tensor | None]  # per sequence with start > 0: (start + len,) slots to attend over


@dataclass(slots=True)
class DecodeLayout:
    """One new token per sequence."""

    slots: Tensor  # (B,) int64: cache slot of each new token
    keys: tuple  # one hashable identity per sequence, in batch order
    lengths: list[int]  # keys each sequence attends to, its new token included
    tables: list[list[int]]  # each sequence's block table


MIRROR_HEADROOM = 64  # tokens a mirror row can grow before the mirror is rebuilt


@dataclass(slots=True)
class _Mirror:
    """The decode batch's keys and values, contiguous per sequence (see module docstring)."""

    keys: tuple
    lengths: list[int]
    cap: int  # token positions per row
    k: Tensor  # (n_layers, B, KVH, cap, hd): head-major, so each head's keys are one contiguous run
    v: Tensor


class PagedKVCache:
    """Keys and values of every layer, ``(n_layers, num_blocks * block_size, n_kv_heads, head_dim)``."""

    def __init__(self, *, n_layers: int, n_kv_heads: int, head_dim: int, num_blocks: int,
                 block_size: int, dtype: torch.dtype, device: torch.device, prefix_caching: bool = True,
                 kernels: dk.Kernels | None = None):
        shape = (n_layers, num_blocks * block_size, n_kv_heads, head_dim)
        # Zeros, not empty: a masked-out slot still enters softmax(QK)V with weight 0, and 0 * NaN
        # from uninitialised memory would poison the whole row.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.allocator = BlockPool(num_blocks, block_size, prefix_caching)
        self.block_size = block_size
        self._layout: PrefillLayout | DecodeLayout | None = None
        self._groups: list = []  # the prefill's attention groups (see _plan)
        self._mirror: _Mirror | None = None
        self._rows: Tensor | None = None  # where each new token goes in the mirror
        self._bias: Tensor | None = None  # (B, 1, 1, L): 0 where a key may be attended, -inf past it
        self.mirror_rebuilds = 0
        # the decode kernels the engine chose, where they apply (float32 on the CPU), else None
        self.kernels = kernels if dtype == torch.float32 and torch.device(device).type == "cpu" else None
        self._lengths: Tensor | None = None  # (B,) int64: keys each decode sequence attends to (kernels)

    @property
    def capacity_tokens(self) -> int:
        return self.allocator.num_blocks * self.block_size

    def slot(self, block_table: list[int], position: int) -> int:
        return block_table[position // self.block_size] * self.block_size + position % self.block_size

    def begin_prefill(self, layout: PrefillLayout) -> None:
        self._layout = layout
        self._groups = self._plan(layout)
        self._mirror = None  # the next decode batch is a different one (or its blocks were refilled)

    @staticmethod
    def _plan(layout: PrefillLayout) -> list[tuple[int, int, int, int, Tensor | None, Tensor | None]]:
        """Group neighbouring sequences that can attend in one batched call, once per step (the
        layers all reuse it): (offset, tokens each, count, cached prefix, context slots, mask).
        New whole sequences of equal length form a group with no context; sequences with a cached
        prefix (prefix caching, or a long prompt's earlier chunks) group by equal prefix and chunk
        lengths, with their context slots concatenated and one causal mask."""
        lens, starts, ctxs = layout.seq_lens, layout.starts, layout.context_slots
        groups, offset, i = [], 0, 0
        while i < len(lens):
            n, start, fresh = lens[i], starts[i], ctxs[i] is None
            j = i + 1
            while j < len(lens) and lens[j] == n and (ctxs[j] is None) == fresh and (fresh or starts[j] == start):
                j += 1
            count = j - i
            if fresh:
                groups.append((offset, n, count, 0, None, None))
            else:
                slots = ctxs[i] if count == 1 else torch.cat(ctxs[i:j])
                rows = torch.arange(n, device=slots.device).unsqueeze(1) + start  # (n, 1) query positions
                mask = torch.arange(start + n, device=slots.device).unsqueeze(0) <= rows  # (n, start + n)
                groups.append((offset, n, count, start, slots, mask))
            offset, i = offset + n * count, j
        return groups

    def begin_decode(self, layout: DecodeLayout) -> None:
        self._layout = layout
        m, lengths = self._mirror, layout.lengths
        longest = max(lengths)
        if (m is None or m.keys != layout.keys or longest > m.cap
                or any(n != p + 1 for n, p in zip(lengths, m.lengths, strict=True))):
            m = self._mirror = self._rebuild(layout)
        m.lengths = lengths
        device = self.k.device
        kvh = self.k.size(2)
        self._rows = torch.tensor([(b * kvh + h) * m.cap + n - 1 for b, n in enumerate(lengths) for h in range(kvh)],
                                  device=device)
        past = torch.arange(longest, device=device).unsqueeze(0) >= torch.tensor(lengths, device=device).unsqueeze(1)
        if self.kernels is not None:
            self._lengths = torch.tensor(lengths, dtype=torch.int64)
        self._bias = torch.zeros(past.shape, dtype=self.k.dtype, device=device).masked_fill_(past, float("-inf"))[:, None, None, :]

    def _rebuild(self, layout: DecodeLayout) -> _Mirror:
        """Copy the batch's cached keys and values (all but each new token, which ``attend``
        writes) out of their blocks, every layer in one gather."""
        self.mirror_rebuilds += 1
        self._mirror = None  # free the old one first
        bs = self.block_size
        cap = -(-(max(layout.lengths) + MIRROR_HEADROOM) // bs) * bs
        slots = []
        for table, n in zip(layout.tables, layout.lengths, strict=True):
            cached = [table[p // bs] * bs + p % bs for p in range(n - 1)]
            slots += cached + [0] * (cap - len(cached))  # slot 0: finite values, masked out
        context = torch.tensor(slots, device=self.k.device)
        n_layers, _, kvh, hd = self.k.shape
        B = len(layout.lengths)

        def gather(cache: Tensor) -> Tensor:
            rows = cache.index_select(1, context).view(n_layers, B, cap, kvh, hd)
            return rows.transpose(2, 3).contiguous()

        return _Mirror(layout.keys, [n - 1 for n in layout.lengths], cap, gather(self.k), gather(self.v))

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q: (B, H, T, hd); k, v: (B, KVH, T, hd), rotated. Returns (B, H, T, hd)."""
        layout = self._layout
        if isinstance(layout, DecodeLayout):
            return self._attend_decode(layer, layout, q, k, v)
        if isinstance(layout, PrefillLayout):
            return self._attend_prefill(layer, layout, q, k, v)
        raise RuntimeError("PagedKVCache.attend called before begin_prefill/begin_decode")

    def _attend_prefill(self, layer: int, layout: PrefillLayout, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # q: (1, H, N, hd); k, v: (1, KVH, N, hd)
        self.k[layer].index_copy_(0, layout.slots, k[0].transpose(0, 1))  # (N, KVH, hd)
        self.v[layer].index_copy_(0, layout.slots, v[0].transpose(0, 1))
        gqa = q.size(1) != k.size(1)
        outs = []
        for offset, n, count, start, slots, mask in self._groups:
            if slots is None:  # whole new sequences: causal attention on the fresh k/v
                outs.append(_causal(q, k, v, offset, n, count, gqa))
                continue
            # a cached prefix (prefix caching, or a long prompt's earlier chunks): attend over it too
            KVH, hd, H = k.size(1), k.size(3), q.size(1)
            kc = self.k[layer].index_select(0, slots).view(count, start + n, KVH, hd).transpose(1, 2)
            vc = self.v[layer].index_select(0, slots).view(count, start + n, KVH, hd).transpose(1, 2)
            qb = q[0, :, offset:offset + n * count].view(H, count, n, hd).transpose(0, 1)  # (count, H, n, hd)
            out = F.scaled_dot_product_attention(qb, kc, vc, attn_mask=mask, enable_gqa=gqa)
            outs.append(out.transpose(0, 1).reshape(1, H, count * n, hd))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)

    def _attend_decode(self, layer: int, layout: DecodeLayout, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        # q: (B, H, 1, hd); k, v: (B, KVH, 1, hd)
        B, KVH, _, hd = k.shape
        H = q.size(1)
        m = self._mirror
        mk, mv = m.k[layer], m.v[layer]  # (B, KVH, cap, hd)
        if (self.kernels is not None and H // KVH <= dk.MAX_GROUP and hd <= dk.MAX_HEAD_DIM and q.stride(1) == hd
                and k.stride(1) == v.stride(1) == hd and k.stride(0) == v.stride(0)):
            self.kernels.store_kv(k, v, self.k[layer], self.v[layer], layout.slots, mk, mv, self._lengths)
            return self.kernels.decode_attention(q, mk, mv, self._lengths)
        new_k, new_v = k[:, :, 0], v[:, :, 0]  # (B, KVH, hd)
        self.k[layer].index_copy_(0, layout.slots, new_k)
        self.v[layer].index_copy_(0, layout.slots, new_v)
        mk.view(-1, hd).index_copy_(0, self._rows, new_k.reshape(-1, hd))
        mv.view(-1, hd).index_copy_(0, self._rows, new_v.reshape(-1, hd))
        L = self._bias.size(-1)
        kc, vc = mk[:, :, :L], mv[:, :, :L]  # (B, KVH, L, hd), views
        qg = q.reshape(B, KVH, H // KVH, hd)  # heads k*G .. k*G+G-1 read key/value head k
        out = F.scaled_dot_product_attention(qg, kc, vc, attn_mask=self._bias)
        return out.view(B, H, 1, hd)


def _causal(q: Tensor, k: Tensor, v: Tensor, offset: int, n: int, count: int, gqa: bool) -> Tensor:
    """Causal attention for ``count`` packed sequences of ``n`` tokens each, starting at ``offset``
    of the packed row, as one batched call. Returns (1, H, count * n, hd)."""
    end = offset + n * count
    H, KVH, hd = q.size(1), k.size(1), q.size(3)
    qb = q[0, :, offset:end].view(H, count, n, hd).transpose(0, 1)  # (count, H, n, hd)
    kb = k[0, :, offset:end].view(KVH, count, n, hd).transpose(0, 1)
    vb = v[0, :, offset:end].view(KVH, count, n, hd).transpose(0, 1)
    out = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=gqa)
    return out.transpose(0, 1).reshape(1, H, count * n, hd)
