"""Autoregressive generation with a contiguous KV cache, as small pure functions (gpt-fast style).

``StaticKVCache`` preallocates keys and values for B sequences that advance together;
``prefill`` feeds the prompt, ``decode_one_token`` feeds one token, ``sample`` picks the next
token, and ``generate`` strings them together for one prompt. The serving engine keeps its own
cache (paged, one slot per request); this one is for the demo, tests and scripts.

Contract: the logits ``generate`` acts on are those of a full forward pass over the prompt plus
everything generated so far (up to float rounding): the cache changes the cost, not the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .llama import Llama, ModelConfig


class StaticKVCache:
    """Per-layer keys and values in preallocated (B, KVH, max_len, hd) tensors, filled left to
    right. Implements ``AttentionCache``: one forward pass of the model through all its layers
    appends its T tokens to every sequence and advances ``length`` by T."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        if not 0 < max_len <= cfg.max_seq_len:
            raise ValueError(f"max_len={max_len}: must be in 1..{cfg.max_seq_len} (model.max_seq_len)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be a positive integer")
        shape = (batch_size, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.max_len = max_len
        self.length = 0  # tokens stored per sequence
        self._last_layer = cfg.n_layers - 1
        self._gqa = cfg.n_heads != cfg.n_kv_heads

    def positions(self, num_tokens: int) -> Tensor:
        """Absolute positions (T,) of the next ``num_tokens`` tokens to feed."""
        return torch.arange(self.length, self.length + num_tokens, device=self.k[0].device)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q: (B, H, T, hd); k, v: (B, KVH, T, hd) of the new tokens. Returns (B, H, T, hd)."""
        start, end = self.length, self.length + q.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {start} tokens cached + {q.shape[2]} new > "
                             f"max_len={self.max_len}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        keys, values = self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, KVH, end, hd)
        if start == 0:  # a first chunk: plain causal attention, as without a cache
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True, enable_gqa=self._gqa)
        else:  # new token i (at position start + i) sees cached positions <= start + i
            mask = None
            if end - start > 1:
                rows = torch.arange(start, end, device=q.device)[:, None]
                mask = torch.arange(end, device=q.device)[None, :] <= rows  # (T, end)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=self._gqa)
        if layer == self._last_layer:
            self.length = end
        return out


def prefill(model: Llama, cache: StaticKVCache, tokens: Tensor, chunk_size: int | None = None) -> Tensor:
    """Feed ``tokens`` (B, T) into ``cache``, ``chunk_size`` tokens per forward pass (all at once
    when None). Returns the logits (B, V) that predict the token after the last one."""
    chunk = chunk_size or tokens.shape[1]
    for i in range(0, tokens.shape[1], chunk):
        piece = tokens[:, i:i + chunk]
        logits = model(piece, cache.positions(piece.shape[1]), cache)  # (B, t, V)
    return logits[:, -1]


def decode_one_token(model: Llama, cache: StaticKVCache, token: Tensor) -> Tensor:
    """Feed one token per sequence, ``token`` (B, 1). Returns the next logits (B, V)."""
    return model(token, cache.positions(1), cache)[:, -1]


def sample(logits: Tensor, temperature: float = 0.0, top_k: int | None = None,
           generator: torch.Generator | None = None) -> Tensor:
    """Next tokens (B,) from logits (B, V): argmax when ``temperature`` is 0, else a draw from
    softmax(logits / temperature) restricted to the ``top_k`` most likely tokens."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(model: Llama, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, generator: torch.Generator | None = None,
             stop_ids: Iterable[int] = ()) -> list[int]:
    """Continue ``prompt_ids`` by up to ``max_new_tokens`` tokens; greedy when ``temperature`` is
    0. Stops after the first token in ``stop_ids``, which is included in the result (as in
    transformers' ``generate``). Returns the new tokens only. ``generator`` must live on the
    model's device."""
    prompt = list(prompt_ids)
    limit = model.cfg.max_seq_len
    if not prompt:
        raise ValueError("prompt_ids is empty: generation needs at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 0")
    if len(prompt) + max_new_tokens > limit:
        raise ValueError(f"prompt of {len(prompt)} tokens + max_new_tokens={max_new_tokens} "
                         f"exceeds the model's max_seq_len={limit}")
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: must be >= 0 (0 is greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}: must be a positive integer or None")
    if max_new_tokens == 0:
        return []
    stops = set(stop_ids)
    param = next(model.parameters())
    cache = StaticKVCache(model.cfg, 1, len(prompt) + max_new_tokens, param.device, param.dtype)
    out: list[int] = []
    with torch.inference_mode():
        logits = prefill(model, cache, torch.tensor([prompt], device=param.device))
        while True:
            token = sample(logits, temperature, top_k, generator)  # (1,)
            out.append(int(token))
            if out[-1] in stops or len(out) == max_new_tokens:
                return out
            logits = decode_one_token(model, cache, token[:, None])
