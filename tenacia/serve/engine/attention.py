"""Attention over the paged cache: the ``AttentionCache`` the model calls from every layer.

Before each forward the runner hands ``PagedAttention`` the step's layout:

- ``begin_prefill(PrefillLayout)``: the new tokens of several sequences packed into one row
  ``(1, N)``; their keys and values go to their cache slots, and attention runs per sequence,
  causal, over its cached prefix (non-empty when a long prompt is chunked, or a prefix was
  cached) plus its new tokens, so no compute is spent on padding (neighbouring sequences of equal
  length run as one batched call; the grouping is planned once per step, ``_plan``);
- ``begin_decode(DecodeLayout)``: one new token per sequence ``(B, 1)``; the backend's
  ``decode_attention`` (``latent_decode_attention`` where the values are in the keys) writes it
  and attends over the decode mirror (``mirror.py``).

What a token stores and the softmax scale are the cache's ``CacheSpec``: for latent attention
the model hands ``attend`` the absorbed queries, one key head, and no values (``v`` None), and
every path reads the values as the keys' first ``value_dim`` columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .backend import TorchBackend
from .kv_cache import PagedKVCache
from .mirror import DecodeLayout, DecodeMirror


@dataclass(slots=True)
class PrefillLayout:
    """New tokens of several sequences packed into one row."""

    slots: Tensor  # (N,) int64: cache slot of every new token
    seq_lens: list[int]  # new tokens per sequence; they sum to N
    starts: list[int]  # tokens already cached per sequence (0 unless a prompt is chunked)
    context_slots: list[Tensor | None]  # per sequence with start > 0: (start + len,) slots to attend over


class PagedAttention:
    """The attention of every layer over ``cache``, with ``backend``'s decode attention."""

    def __init__(self, cache: PagedKVCache, backend: TorchBackend):
        self.cache, self.backend = cache, backend
        self.mirror = DecodeMirror(cache)
        self._layout: PrefillLayout | DecodeLayout | None = None
        self._groups: list = []  # the prefill's attention groups (see _plan)

    def begin_prefill(self, layout: PrefillLayout) -> None:
        self._layout = layout
        self._groups = _plan(layout)
        self.mirror.drop()  # the next decode batch is a different one (or its blocks were refilled)

    def begin_decode(self, layout: DecodeLayout) -> None:
        self._layout = layout
        self.mirror.begin(layout)

    def decode_rows(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Where a decode step's layers read and write, for a call that runs them all
        (``cpu.decode_stack.DecodeStack``): each new token's cache slot (B,), the cache's keys and
        values (layers, slots, KVH, hd), the mirror's (layers, B, KVH, cap, hd) and its lengths (B,)."""
        layout, mirror = self._layout, self.mirror
        if not isinstance(layout, DecodeLayout) or mirror.v is None:
            raise RuntimeError("PagedAttention.decode_rows needs begin_decode and a cache with values")
        return layout.slots, self.cache.k, self.cache.v, mirror.k, mirror.v, mirror.lengths

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor | None) -> Tensor:
        """q: (B, H, T, key_dim); k: (B, KVH, T, key_dim), v: (B, KVH, T, value_dim) or None where
        the spec keeps the values in the keys; rotated. Returns (B, H, T, value_dim): B sequences
        of one token in a decode, one packed row (B = 1) in a prefill."""
        layout, cache = self._layout, self.cache
        if isinstance(layout, DecodeLayout):
            spec = cache.spec
            if spec.values_in_keys:
                return self.backend.latent_decode_attention(layer, q, k, cache.k[layer], layout.slots, self.mirror,
                                                            spec.value_dim, spec.scale)
            return self.backend.decode_attention(layer, q, k, v, cache.k[layer], cache.v[layer], layout.slots,
                                                 self.mirror)
        if isinstance(layout, PrefillLayout):
            return self._prefill(layer, layout, q, k, v)
        raise RuntimeError("PagedAttention.attend called before begin_prefill/begin_decode")

    def _prefill(self, layer: int, layout: PrefillLayout, q: Tensor, k: Tensor, v: Tensor | None) -> Tensor:
        # q: (1, H, N, kd); k: (1, KVH, N, kd); v: (1, KVH, N, vd) or None (values in the keys)
        spec = self.cache.spec
        store_k = self.cache.k[layer]
        self.backend.store_rows(store_k, layout.slots, k[0].transpose(0, 1))  # (N, KVH, kd)
        if v is None:
            v = k[..., :spec.value_dim]
        else:
            self.backend.store_rows(self.cache.v[layer], layout.slots, v[0].transpose(0, 1))
        outs = []
        for offset, n, count, start, slots, mask in self._groups:
            if slots is None:  # whole new sequences: causal attention on the fresh k/v
                outs.append(self.backend.causal_attention(q, k, v, offset, n, count, spec.scale))
                continue
            # a cached prefix (prefix caching, or a long prompt's earlier chunks): attend over it too
            KVH, kd, vd, H = k.size(1), k.size(3), v.size(3), q.size(1)
            kc = store_k.index_select(0, slots).view(count, start + n, KVH, kd).transpose(1, 2)
            vc = kc[..., :vd] if spec.values_in_keys else (
                self.cache.v[layer].index_select(0, slots).view(count, start + n, KVH, vd).transpose(1, 2))
            qb = q[0, :, offset:offset + n * count].view(H, count, n, kd).transpose(0, 1)  # (count, H, n, kd)
            out = self.backend.prefix_attention(qb, kc, vc, start, mask, spec.scale)
            outs.append(out.transpose(0, 1).reshape(1, H, count * n, vd))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


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
