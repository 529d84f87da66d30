"""A paged key/value cache of bounded size.

Memory is ``num_blocks`` blocks of ``block_size`` token slots per layer, allocated when the engine
starts and never grown. A sequence holds a list of blocks (its block table, from ``allocator``);
token ``p`` of a sequence lives in slot ``block_table[p // block_size] * block_size + p %
block_size``. What reads and writes it: ``attention.py`` (a prefill's keys and values, the
attention over them) and ``mirror.py`` (a decode batch's contiguous copy).
"""

from __future__ import annotations

import torch

from .block_pool import BlockPool


class PagedKVCache:
    """Keys and values of every layer, ``k`` and ``v``: ``(n_layers, num_blocks * block_size,
    n_kv_heads, head_dim)``, and the block allocator."""

    def __init__(self, *, n_layers: int, n_kv_heads: int, head_dim: int, num_blocks: int,
                 block_size: int, dtype: torch.dtype, device: torch.device, prefix_caching: bool = True):
        shape = (n_layers, num_blocks * block_size, n_kv_heads, head_dim)
        # Zeros, not empty: a masked-out slot still enters softmax(QK)V with weight 0, and 0 * NaN
        # from uninitialised memory would poison the whole row.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.allocator = BlockPool(num_blocks, block_size, prefix_caching)
        self.block_size = block_size

    @property
    def capacity_tokens(self) -> int:
        return self.allocator.num_blocks * self.block_size

    def slot(self, block_table: list[int], position: int) -> int:
        return block_table[position // self.block_size] * self.block_size + position % self.block_size
