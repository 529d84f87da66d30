"""A paged key/value cache of bounded size, and what a model keeps in it per token (``CacheSpec``).

Memory is ``num_blocks`` blocks of ``block_size`` token slots per layer, allocated when the engine
starts and never grown. A sequence holds a list of blocks (its block table, from ``allocator``);
token ``p`` of a sequence lives in slot ``block_table[p // block_size] * block_size + p %
block_size``. What reads and writes it: ``attention.py`` (a prefill's keys and values, the
attention over them) and ``mirror.py`` (a decode batch's contiguous copy).

The block pool, the scheduler and prefix caching see slots only; what a slot holds is the model's
``CacheSpec``, read from its config once (``CacheSpec.of``), the one place the engine tells
attention shapes apart:

- grouped-query attention (Llama family): ``n_kv_heads`` keys and values of ``head_dim`` each;
- latent attention (deepseek-v3, ``tenacia.model.deepseek.mla``): one entry of ``kv_lora_rank +
  qk_rope_head_dim`` numbers, the normed latent then the rotated shared key. It is the key of
  the absorbed attention, and its first ``kv_lora_rank`` columns are the value
  (``values_in_keys``): no value store at all, as in DeepSeek's inference code and vLLM's MLA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...shape import ModelConfig
from .block_pool import BlockPool


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """What one token keeps per layer, and how attention reads it."""

    kv_heads: int  # key (and value) heads a token stores; 1 for latent attention
    key_dim: int  # width of a stored key
    value_dim: int  # width of a value
    values_in_keys: bool  # a value is the first value_dim columns of the key: nothing else stored
    scale: float | None  # softmax scale; None: 1 / sqrt(key_dim)

    @classmethod
    def of(cls, cfg: ModelConfig) -> CacheSpec:
        """The spec of a model of ``cfg``'s shape (module docstring)."""
        if cfg.mla is not None:
            a = cfg.mla
            return cls(kv_heads=1, key_dim=a.cache_dim, value_dim=a.kv_lora_rank, values_in_keys=True,
                       scale=a.qk_head_dim ** -0.5)  # the scale of the plain form's (n + r)-wide heads
        return cls.grouped(cfg.n_kv_heads, cfg.head_dim)

    @classmethod
    def grouped(cls, kv_heads: int, head_dim: int) -> CacheSpec:
        """Grouped-query attention: ``kv_heads`` keys and values of ``head_dim``."""
        return cls(kv_heads=kv_heads, key_dim=head_dim, value_dim=head_dim, values_in_keys=False, scale=None)

    @property
    def elements_per_token(self) -> int:
        """Cached numbers per token and layer."""
        return self.kv_heads * (self.key_dim + (0 if self.values_in_keys else self.value_dim))


class PagedKVCache:
    """Keys of every layer, ``k``: ``(n_layers, num_blocks * block_size, kv_heads, key_dim)``;
    values ``v`` likewise with ``value_dim``, or None where the values are in the keys; and the
    block allocator."""

    def __init__(self, *, n_layers: int, spec: CacheSpec, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, prefix_caching: bool = True):
        self.spec, self.n_layers = spec, n_layers
        slots = num_blocks * block_size
        # Zeros, not empty: a masked-out slot still enters softmax(QK)V with weight 0, and 0 * NaN
        # from uninitialised memory would poison the whole row.
        self.k = torch.zeros((n_layers, slots, spec.kv_heads, spec.key_dim), dtype=dtype, device=device)
        self.v: torch.Tensor | None = None if spec.values_in_keys else torch.zeros(
            (n_layers, slots, spec.kv_heads, spec.value_dim), dtype=dtype, device=device)
        self.allocator = BlockPool(num_blocks, block_size, prefix_caching)
        self.block_size = block_size

    @property
    def capacity_tokens(self) -> int:
        return self.allocator.num_blocks * self.block_size

    @property
    def bytes_per_token(self) -> int:
        """Cache bytes one token takes, all layers together."""
        return self.n_layers * self.spec.elements_per_token * self.k.element_size()

    def slot(self, block_table: list[int], position: int) -> int:
        return block_table[position // self.block_size] * self.block_size + position % self.block_size
