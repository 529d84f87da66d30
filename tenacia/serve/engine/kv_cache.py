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
- decode: one new token per sequence ``(B, 1)``; each sequence's cached keys are gathered into
  ``(B, L)`` (L: the longest context, rounded up to a block) and positions past its own length
  are masked out. The query heads that share a key/value head attend as one group of queries
  ``(B, KVH, H / KVH, hd)``: the same result as grouped-query attention with the heads repeated,
  in less than half the time on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .block_pool import BlockPool


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
    context: Tensor  # (B * L,) int64: the cache slots of each sequence's keys, padded with slot 0
    bias: Tensor  # (B, 1, 1, L) float: 0 where a key may be attended, -inf past the sequence


class PagedKVCache:
    """Keys and values of every layer, ``(n_layers, num_blocks * block_size, n_kv_heads, head_dim)``."""

    def __init__(self, *, n_layers: int, n_kv_heads: int, head_dim: int, num_blocks: int,
                 block_size: int, dtype: torch.dtype, device: torch.device, prefix_caching: bool = True):
        shape = (n_layers, num_blocks * block_size, n_kv_heads, head_dim)
        # Zeros, not empty: a masked-out slot still enters softmax(QK)V with weight 0, and 0 * NaN
        # from uninitialised memory would poison the whole row.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.allocator = BlockPool(num_blocks, block_size, prefix_caching)
        self.block_size = block_size
        self._layout: PrefillLayout | DecodeLayout | None = None
        self._gathered: tuple[Tensor, Tensor] | None = None
        self._groups: list = []  # the prefill's attention groups (see _plan)

    @property
    def capacity_tokens(self) -> int:
        return self.allocator.num_blocks * self.block_size

    @staticmethod
    def bytes_per_token(n_layers: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * n_layers * n_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()

    def slot(self, block_table: list[int], position: int) -> int:
        return block_table[position // self.block_size] * self.block_size + position % self.block_size

    def begin_prefill(self, layout: PrefillLayout) -> None:
        self._layout = layout
        self._groups = self._plan(layout)

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
        # one pair of gather buffers for all layers of the step (no allocation per layer)
        rows = (layout.context.numel(), *self.k.shape[2:])
        self._gathered = (torch.empty(rows, dtype=self.k.dtype, device=self.k.device),
                          torch.empty(rows, dtype=self.v.dtype, device=self.v.device))

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
        self.k[layer].index_copy_(0, layout.slots, k[:, :, 0])  # (B, KVH, hd)
        self.v[layer].index_copy_(0, layout.slots, v[:, :, 0])
        # index_select copies whole rows; advanced indexing (tensor[idx]) is several times slower.
        kbuf, vbuf = self._gathered
        kc = torch.index_select(self.k[layer], 0, layout.context, out=kbuf).view(B, -1, KVH, hd).transpose(1, 2)
        vc = torch.index_select(self.v[layer], 0, layout.context, out=vbuf).view(B, -1, KVH, hd).transpose(1, 2)
        H = q.size(1)
        qg = q.reshape(B, KVH, H // KVH, hd)  # heads k*G .. k*G+G-1 read key/value head k
        out = F.scaled_dot_product_attention(qg, kc, vc, attn_mask=layout.bias)
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
