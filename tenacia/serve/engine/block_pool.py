"""Cache blocks: who holds which, and which hold a known prefix (automatic prefix caching).

A block is one ``block_size``-token slice of the paged KV cache. Sequences hold blocks through
their block tables; a block may be held by several sequences at once when they share a prefix,
so each block has a reference count.

Prefix caching. A *full* block whose keys and values are all computed is registered under the
key ``(parent, tokens)``: ``tokens`` are the block's token ids and ``parent`` identifies the
registered block before it (``-1`` for a sequence's first block). A block's keys and values
depend only on the tokens up to its end (absolute positions from 0), so two sequences whose
prompts start with the same full blocks can share those blocks: ``match`` hands a new sequence
every registered block of its longest cached prefix, and only the rest of its prompt is
prefilled. Keys compare the token tuples themselves, so a hash collision cannot alias two
prefixes. ``parent`` is a registration number, never reused, so an evicted block's children
simply stop matching.

When its last holder releases it, a registered block keeps its contents and becomes
*evictable*: free to hand out, but matched again while it is still there. ``allocate`` takes
never-registered blocks first, then evicts the least recently released. The pool never holds
more than ``num_blocks`` blocks, cached or not: prefix caching uses only memory that is free.

Contract with the scheduler: a sequence writes keys and values only at positions from its
``num_cached`` on, and ``match`` never covers a prompt's last token (it must be computed to be
sampled from), so a shared block is never written. Not thread-safe: only the engine thread
touches it.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

BlockKey = tuple[int, tuple[int, ...]]


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True):
        self.num_blocks, self.block_size, self.prefix_caching = num_blocks, block_size, prefix_caching
        self._free = list(range(num_blocks - 1, -1, -1))  # never registered; pop() hands out low ids first
        self._evictable: OrderedDict[int, None] = OrderedDict()  # registered, unheld; oldest first
        self._refs = [0] * num_blocks
        self._key: dict[int, BlockKey] = {}  # registered block -> its key
        self._number: dict[int, int] = {}  # registered block -> its registration number
        self._by_key: dict[BlockKey, int] = {}
        self._numbers = itertools.count()
        self.hit_tokens = 0  # prompt tokens served from the cache, since start
        self.query_tokens = 0  # prompt tokens looked up
        self.evictions = 0  # cached blocks handed out again

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    @property
    def num_free(self) -> int:
        """Blocks that ``allocate`` can hand out now (evictable cached blocks included)."""
        return len(self._free) + len(self._evictable)

    @property
    def usage(self) -> float:
        """Share of blocks held by running sequences, in [0, 1]."""
        return 1.0 - self.num_free / self.num_blocks

    @property
    def num_cached_blocks(self) -> int:
        return len(self._key)

    def allocate(self, n: int) -> list[int]:
        if n > self.num_free:
            raise RuntimeError(f"asked for {n} cache blocks, {self.num_free} free (the scheduler should have checked)")
        out = []
        for _ in range(n):
            if self._free:
                block = self._free.pop()
            else:
                block, _ = self._evictable.popitem(last=False)
                self._forget(block)
                self.evictions += 1
            self._refs[block] = 1
            out.append(block)
        return out

    def free(self, blocks: list[int]) -> None:
        """Release one hold on each block (a sequence's whole table, in order)."""
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] > 0:
                continue
            if block in self._key:
                self._evictable[block] = None
            else:
                self._number.pop(block, None)  # a private copy of a cached block's contents
                self._free.append(block)

    def reset(self) -> None:
        """Forget every cached prefix and the counters; only valid when no block is held."""
        if any(self._refs):
            raise RuntimeError("reset() with blocks still held")
        self.__init__(self.num_blocks, self.block_size, self.prefix_caching)

    # ----- prefix caching ----------------------------------------------------------------------------
    def match(self, tokens: list[int]) -> list[int]:
        """Hold and return the registered blocks of ``tokens``' longest cached prefix, leaving at
        least the last token uncovered. Give them back with ``free`` if they cannot be used."""
        if not self.prefix_caching:
            return []
        bs, parent, out = self.block_size, -1, []
        for i in range((len(tokens) - 1) // bs):
            block = self._by_key.get((parent, tuple(tokens[i * bs:(i + 1) * bs])))
            if block is None:
                break
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1
            out.append(block)
            parent = self._number[block]
        return out

    def count_lookup(self, tokens: int, hits: int) -> None:
        """Account one admitted sequence: ``tokens`` looked up, ``hits`` blocks found."""
        self.query_tokens += tokens
        self.hit_tokens += hits * self.block_size

    def register(self, table: list[int], tokens: list[int], num_computed: int, done: int) -> int:
        """Register the full blocks of ``table`` among the first ``num_computed`` tokens, from block
        ``done`` on (those before are registered already); return the new ``done``."""
        if not self.prefix_caching:
            return done
        bs = self.block_size
        full = min(num_computed // bs, len(table))
        for i in range(done, full):
            parent = -1 if i == 0 else self._number.get(table[i - 1])
            if parent is None:
                return i  # the block before was evicted while we held it? impossible; stay safe
            key = (parent, tuple(tokens[i * bs:(i + 1) * bs]))
            block = table[i]
            if block in self._key:
                continue  # matched from the cache: registered already
            if key in self._by_key:
                # another sequence computed the same prefix at the same time: keep its block as
                # the cached one; ours stays private, but children chain on the registered number
                self._number.setdefault(block, self._number[self._by_key[key]])
                continue
            self._by_key[key] = block
            self._key[block] = key
            self._number[block] = next(self._numbers)
        return full

    def _forget(self, block: int) -> None:
        key = self._key.pop(block, None)
        if key is not None and self._by_key.get(key) == block:
            del self._by_key[key]
        self._number.pop(block, None)
