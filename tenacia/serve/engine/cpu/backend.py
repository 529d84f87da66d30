"""The CPU backends (see ``engine/backend.py``), and the choice among them.

- ``CpuBackend``: float32 on a CPU, the products as ``products.PackedLinear`` (each projection's
  implementation timed on this CPU at start by ``products.ProductChooser``, or the defaults
  without one), the elementwise work and attention as torch ops;
- ``KernelBackend``: the same, given one build of the decode kernels (``kernels.choose``): the
  products of a decode step run in the kernels' panels, gate and up as one product, and the
  elementwise work, the decode attention, a prefill's cache store and its attention of whole new
  sequences run in the kernels; a decode step's layers run in one call (``decode_stack.py``),
  layer by layer, or layer by layer with the prefill's products, whichever a whole step is timed
  fastest in at start (``decode_path.py``); a prefill's products deal the threads its columns or
  its rows, whichever whole prefills are timed faster in at start (``prefill_path.py``).

``cpu_backend`` picks once, at the engine's start: ``KernelBackend`` where a build runs on this
CPU and the model's shape suits it, else ``CpuBackend``; ``$TENACIA_ISA`` forces a build
(``avx512``, ``avx2``, ``generic``) or ``torch``: the plain ``TorchBackend`` (torch ops and
``F.linear``, what an accelerator runs), so that a run can be reproduced exactly.
``describe()`` says which, and why not the kernels.
"""

from __future__ import annotations

import os
import time

import torch
from torch import Tensor

from ..backend import DecodeRows, TorchBackend
from ..kv_cache import CacheSpec
from . import decode_path, prefill_path
from . import kernels as dk
from .decode_stack import DecodeStack
from .products import PackedLinear, ProductChooser


class CpuBackend(TorchBackend):
    """Torch ops and the timed products (module docstring). ``why``: why no kernels run."""

    def __init__(self, chooser: ProductChooser | None, why: str):
        super().__init__(why)
        self.chooser = chooser
        self.kernels: dk.Kernels | None = None

    def linear(self, weight: Tensor, bias: Tensor | None = None, runs_in: str = "both") -> PackedLinear:
        return PackedLinear(weight, bias, kernels=self.kernels, chooser=self.chooser, runs_in=runs_in)

    def describe(self) -> tuple[str, str]:
        return f"off ({self.why})", self.chooser.summary() if self.chooser is not None else ""


class KernelBackend(CpuBackend):
    """The decode kernels of one instruction set (module docstring); ``supports`` says whether a
    model's shape suits them."""

    fuse_gate_up = True

    def __init__(self, kernels: dk.Kernels, chooser: ProductChooser | None, forced: bool = False,
                 clock=None):
        super().__init__(chooser, "")
        self.kernels = kernels
        self.forced = forced  # $TENACIA_ISA named the build: nothing is timed for a decode
        self.clock = clock or time.perf_counter  # what decode_path.choose times with (tests: a fake one)
        self.add_rms_norm = kernels.add_rms_norm
        self.rotary_ = kernels.rotary_
        self.silu_mul = kernels.silu_mul
        self.silu_mul_pair = kernels.silu_mul_pair
        self.store_rows = kernels.store_rows
        self.greedy = kernels.argmax_rows
        self.stack_state = "no model built yet"  # what arrange_decode decided, for the start-up line
        self.prefill_state = ""  # and arrange_prefill

    @staticmethod
    def supports(n_heads: int, spec: CacheSpec) -> str | None:
        """None where the kernels run this attention shape (``n_heads`` query heads over what
        ``spec`` caches), else why not."""
        if spec.values_in_keys:
            return "latent attention: the kernels are written for grouped-query attention"
        n_kv_heads, head_dim = spec.kv_heads, spec.key_dim
        if head_dim % 2 or head_dim > dk.MAX_HEAD_DIM:
            return f"a head size of {head_dim}: the kernels need an even head size of at most {dk.MAX_HEAD_DIM}"
        if n_heads % n_kv_heads or n_heads // n_kv_heads > dk.MAX_GROUP:
            return (f"{n_heads} query heads on {n_kv_heads} key/value heads: the kernels need at most "
                    f"{dk.MAX_GROUP} query heads per key/value head")
        return None

    def decode_attention(self, layer: int, q: Tensor, k: Tensor, v: Tensor, cache_k: Tensor, cache_v: Tensor,
                         slots: Tensor, mirror: DecodeRows) -> Tensor:
        mk, mv = mirror.k[layer], mirror.v[layer]
        self.kernels.store_kv(k, v, cache_k, cache_v, slots, mk, mv, mirror.lengths)
        return self.kernels.decode_attention(q, mk, mv, mirror.lengths)

    def arrange_decode(self, model) -> None:
        """Give ``model`` (a ``PackedLlama``) the one call for its decode layers where they suit it
        (``DecodeStack.why_not``), or decode layer by layer; with a product chooser and no
        ``$TENACIA_ISA``, the way is timed (``decode_path.choose``)."""
        why = DecodeStack.why_not(model.layers)
        if why is not None:
            self.stack_state = f"layer by layer: {why}"
            return
        stack = DecodeStack.build(self.kernels, model.layers)
        if self.chooser is None or self.forced:
            model.decode_stack = stack
            self.stack_state = "decode in one call (untimed: " + (
                f"{dk.ISA_ENV} forces the kernels)" if self.forced else "products=default)")
            return
        self.stack_state = decode_path.choose(model, stack, self.clock)

    def arrange_prefill(self, model) -> None:
        """Deal ``model``'s (a ``PackedLlama``) prefill products the rows rather than the columns
        where whole prefills are timed faster so (``prefill_path.choose``); only with a product
        chooser, and where every product still has the kernels' panels."""
        if self.chooser is None:
            return
        why = prefill_path.why_not(model)
        self.prefill_state = f"prefill {prefill_path.AS_TIMED}: {why}" if why else prefill_path.choose(model, self.clock)

    def causal_attention(self, q: Tensor, k: Tensor, v: Tensor, offset: int, n: int, count: int,
                         scale: float | None) -> Tensor:
        # scale is None here (1 / sqrt(hd), the kernel's): this backend runs grouped-query caches only
        H, hd = q.size(1), q.size(3)
        out = torch.empty(count * n, H, hd)
        for j in range(count):  # sequence j: tokens offset + j n .. offset + (j + 1) n - 1
            rows = slice(offset + j * n, offset + (j + 1) * n)
            self.kernels.prefill_attention(q[0, :, rows], k[0, :, rows], v[0, :, rows], out[j * n:(j + 1) * n])
        return out.permute(1, 0, 2).unsqueeze(0)  # (1, H, count * n, hd), a view

    def prefix_attention(self, q: Tensor, k: Tensor, v: Tensor, start: int, mask: Tensor, scale: float | None) -> Tensor:
        # the kernel's tiles (prefill_attention.c) with the cached keys first, one sequence a call;
        # its scale is 1 / sqrt(hd) and its values a head of their own (grouped-query caches)
        if scale is not None or v.size(-1) != q.size(-1):
            return super().prefix_attention(q, k, v, start, mask, scale)
        count, H, n, hd = q.shape
        out = torch.empty(count, n, H, hd)
        for j in range(count):
            self.kernels.prefill_attention(q[j], k[j], v[j], out[j], start)
        return out.permute(0, 2, 1, 3)  # (count, H, n, hd), a view

    def describe(self) -> tuple[str, str]:
        prefill = f"; {self.prefill_state}" if self.prefill_state else ""
        return (f"on ({self.kernels.isa}; {self.stack_state}{prefill})",
                self.chooser.summary() if self.chooser is not None else "")


def cpu_backend(*, kernels: bool, products: str, n_heads: int, spec: CacheSpec) -> TorchBackend:
    """The backend for float32 on this CPU. ``kernels``: allow the decode kernels (False:
    ``--no-decode-kernels``); ``products``: "timed" or "default" (``EngineConfig.products``);
    ``n_heads``, ``spec``: the model's query heads and what its cache holds."""
    chosen, state = dk.choose(kernels)
    if kernels and os.environ.get(dk.ISA_ENV, "").strip() == "torch":
        return TorchBackend(f"{state}: torch ops and F.linear")
    chooser = ProductChooser() if products == "timed" else None
    if chosen is None:
        return CpuBackend(chooser, state)
    unsuited = KernelBackend.supports(n_heads, spec)
    if unsuited:
        return CpuBackend(chooser, f"this model's shape does not suit the {chosen.isa} kernels: {unsuited}")
    return KernelBackend(chosen, chooser, forced=bool(os.environ.get(dk.ISA_ENV, "").strip()))
