"""A decode step's decoder layers in one call into the kernels (``decode_stack.c``).

Layer by layer, a decode step of ``PackedLlama`` calls the kernels about five times a layer from
Python (the products, the norms, rotary, the attention), each product a fork and join of the
OpenMP team; ``DecodeStack`` hands every layer's weights to ``tenacia_decode_stack`` once, at
the engine's start, and a decode step makes one call: the threads stay in one parallel region for
all the layers, a barrier between stages. The arithmetic is the same kernels' in the same order
(the C file is built from their row and panel functions), so the two paths agree to float32
rounding; ``tests/serve/test_decode_stack.py`` checks it for every batch size and build.

``DecodeStack.build`` makes one only where every layer's decode products run in the kernels'
panels (``PackedLinear.decode_impl == "kernel"``; ``why_not`` says why not); whether a model
decodes with it is timed at start (``decode_path.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import kernels as dk

WEIGHTS = ("attn_norm", "ffn_norm", "qkv", "qkv_bias", "wo", "gate_up", "down")  # decode_stack.c's order


class DecodeStack:
    """Every decoder layer of a ``PackedLlama`` for a decode step (module docstring)."""

    def __init__(self, kernels: dk.Kernels, layers: list, table: list[list[int]], keep: list[Tensor]):
        first = layers[0]
        self._fn = kernels.decode_stack_fn
        self._scratch_size = kernels.decode_stack_scratch_fn
        self.layers = len(layers)
        self.dim = first.attn_norm.numel()
        self.heads, self.kv_heads, self.head_dim = first.n_heads, first.n_kv_heads, first.head_dim
        self.hidden = first.down.in_features
        self.eps = first.eps
        self.table = torch.tensor(table, dtype=torch.int64)  # (layers, 7) pointers
        self._keep = keep  # the tensors the pointers point into
        self._scratch = torch.empty(0)  # the stages' activations (decode_stack.c)

    @staticmethod
    def why_not(layers: list) -> str | None:
        """None where every layer's decode products run in the kernels' panels, else why not."""
        for i, layer in enumerate(layers):
            for name in ("qkv", "wo", "gate_up", "down"):
                lin = getattr(layer, name)
                if lin is None or getattr(lin, "decode_impl", None) != "kernel" or lin.small is None:
                    return f"layer {i}'s {name} product does not run in the kernels' panels in a decode"
                if name != "qkv" and lin.bias is not None:
                    return f"layer {i}'s {name} product has a bias"
        return None

    @classmethod
    def build(cls, kernels: dk.Kernels, layers: list) -> DecodeStack:
        """The stack of ``layers`` (``packed.PackedBlock``); call ``why_not`` first."""
        table, keep = [], []
        for layer in layers:
            row = {"attn_norm": layer.attn_norm.contiguous(), "ffn_norm": layer.ffn_norm.contiguous(),
                   "qkv": layer.qkv.small.panels, "qkv_bias": layer.qkv.small.bias, "wo": layer.wo.small.panels,
                   "gate_up": layer.gate_up.small.panels, "down": layer.down.small.panels}
            keep += [t for t in row.values() if t is not None]
            table.append([row[name].data_ptr() if row[name] is not None else 0 for name in WEIGHTS])
        return cls(kernels, layers, table, keep)

    def __call__(self, x: Tensor, cos: Tensor, sin: Tensor, slots: Tensor, cache_k: Tensor, cache_v: Tensor,
                 mirror_k: Tensor, mirror_v: Tensor, lengths: Tensor) -> Tensor:
        """x: (B, dim) the embedded tokens, updated in place to the last layer's output (before
        the final norm) and returned; cos, sin: (B, hd); slots: (B,) int64, each new token's cache
        slot; cache_k, cache_v: (layers, slots, KVH, hd); mirror_k, mirror_v: (layers, B, KVH, cap,
        hd) (``mirror.DecodeMirror``); lengths: (B,) int64, keys each sequence attends to."""
        B = x.size(0)
        for t in (x, cos, sin, slots, cache_k, cache_v, mirror_k, mirror_v, lengths):
            if not t.is_contiguous():
                raise ValueError("DecodeStack: every tensor must be contiguous")
        need = self._scratch_size(B, self.dim, self.heads, self.kv_heads, self.head_dim, self.hidden)
        if self._scratch.numel() < need:  # kept between steps, grown to the largest batch yet
            self._scratch = torch.empty(need)
        scratch = self._scratch
        self._fn(self.layers, self.table.data_ptr(), self.dim, self.heads, self.kv_heads, self.head_dim, self.hidden,
                 self.eps, x.data_ptr(), B, cos.data_ptr(), sin.data_ptr(), cache_k.data_ptr(), cache_v.data_ptr(),
                 cache_k.stride(0), slots.data_ptr(), mirror_k.data_ptr(), mirror_v.data_ptr(), mirror_k.stride(0),
                 mirror_k.size(3), lengths.data_ptr(), scratch.data_ptr(), torch.get_num_threads())
        return x
