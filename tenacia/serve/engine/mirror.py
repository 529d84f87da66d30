"""The decode mirror: a decode batch's keys and values, contiguous per sequence.

A decode step attends, for every sequence, over all its cached keys. Read from the paged blocks,
every layer would gather its context at every step (~130 MB copied per step of 16 sequences).
The mirror copies the running batch's keys and values out of their blocks once, into one
contiguous ``(B, KVH, cap, hd)`` run per layer (head-major: each head's keys are one run), for
every layer at once. While the batch stays the same (the same sequences, each one token longer
than at the last decode step) a step only appends its new token, to the mirror as well as to
its block (the backend's ``decode_attention`` writes both); any other change (a sequence joins,
leaves or is preempted, a prefill ran, a row is full) rebuilds the mirror with one gather from
the blocks. It holds no more than those per-step gathers did (the batch's contexts, padded to
the longest plus ``MIRROR_HEADROOM`` tokens) and is freed with the batch. Positions past a
sequence's own length are never attended: the torch backend masks them (``bias``), the kernels
read each sequence's own ``lengths``.

Where the cache keeps the values in the keys (latent attention, ``kv_cache.CacheSpec``) the
mirror holds the keys alone (``v`` None), as the cache does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .kv_cache import PagedKVCache

MIRROR_HEADROOM = 64  # tokens a mirror row can grow before the mirror is rebuilt


@dataclass(slots=True)
class DecodeLayout:
    """One new token per sequence."""

    slots: Tensor  # (B,) int64: cache slot of each new token
    keys: tuple  # one hashable identity per sequence, in batch order
    lengths: list[int]  # keys each sequence attends to, its new token included
    tables: list[list[int]]  # each sequence's block table


class DecodeMirror:
    """The mirror of one decode batch (module docstring). After ``begin(layout)``: ``k``, ``v``
    (n_layers, B, KVH, cap, hd; ``v`` None where the cache has none), ``lengths`` (B,) int64, and on demand ``rows()`` and ``bias()``
    for that step (``backend.DecodeRows``). ``drop()`` frees it; ``rebuilds`` counts gathers."""

    def __init__(self, cache: PagedKVCache):
        self.cache = cache
        self.rebuilds = 0
        self._keys: tuple | None = None
        self._lengths: list[int] = []  # keys each row holds
        self.cap = 0
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.lengths: Tensor | None = None
        self._rows: Tensor | None = None
        self._bias: Tensor | None = None

    def drop(self) -> None:
        self._keys, self.k, self.v = None, None, None

    def begin(self, layout: DecodeLayout) -> None:
        """Make the mirror hold ``layout``'s batch, each row missing only its new token."""
        lengths = layout.lengths
        if (self.k is None or self._keys != layout.keys or max(lengths) > self.cap
                or any(n != p + 1 for n, p in zip(lengths, self._lengths, strict=True))):
            self._rebuild(layout)
        self._lengths = lengths
        self.lengths = torch.tensor(lengths, dtype=torch.int64, device=self.cache.k.device)
        self._rows = self._bias = None

    def rows(self) -> Tensor:
        """(B * KVH,) int64: where each sequence's new key of each head goes in ``k.view(-1, hd)``
        of one layer."""
        if self._rows is None:
            kvh, cap = self.cache.k.size(2), self.cap
            self._rows = torch.tensor([(b * kvh + h) * cap + n - 1 for b, n in enumerate(self._lengths)
                                       for h in range(kvh)], device=self.cache.k.device)
        return self._rows

    def bias(self) -> Tensor:
        """(B, 1, 1, L), L the longest length: 0 where a key may be attended, -inf past a
        sequence's own length."""
        if self._bias is None:
            device = self.cache.k.device
            past = torch.arange(max(self._lengths), device=device).unsqueeze(0) >= self.lengths.unsqueeze(1)
            bias = torch.zeros(past.shape, dtype=self.cache.k.dtype, device=device)
            self._bias = bias.masked_fill_(past, float("-inf"))[:, None, None, :]
        return self._bias

    def _rebuild(self, layout: DecodeLayout) -> None:
        """Copy the batch's cached keys and values (all but each new token, which the step
        writes) out of their blocks, every layer in one gather."""
        self.rebuilds += 1
        self.drop()  # free the old one first
        cache = self.cache
        bs = cache.block_size
        cap = -(-(max(layout.lengths) + MIRROR_HEADROOM) // bs) * bs
        slots = []
        for table, n in zip(layout.tables, layout.lengths, strict=True):
            cached = [table[p // bs] * bs + p % bs for p in range(n - 1)]
            slots += cached + [0] * (cap - len(cached))  # slot 0: finite values, never attended
        device = cache.k.device
        context = torch.tensor(slots, device=device).view(len(layout.lengths), 1, cap)

        def gather(store: Tensor) -> Tensor:
            # one pass, straight into the head-major layout: row (slot, head) of the store seen
            # as (n_layers, slots * heads, hd) for each (sequence, head, position) of the mirror
            n_layers, n_slots, kvh, hd = store.shape
            rows = (context * kvh + torch.arange(kvh, device=device).view(1, kvh, 1)).view(-1)
            return store.view(n_layers, n_slots * kvh, hd).index_select(1, rows).view(n_layers, -1, kvh, cap, hd)

        self.k = gather(cache.k)
        self.v = gather(cache.v) if cache.v is not None else None
        self.cap, self._keys = cap, layout.keys
        self._lengths = [n - 1 for n in layout.lengths]
