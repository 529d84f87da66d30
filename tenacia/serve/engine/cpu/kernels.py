"""Hand-written float32 kernels for the decode step, one build per instruction set.

A decode step of a small model is ~150 matrix products of a few rows and ~1,000 small torch ops.
Four kinds of kernel here:

``SmallLinear``, the products. Why: a decode step of 16 sequences reads every weight once for 16
rows, so its products are bound by how fast the weights stream from memory. MKL's packed GEMM
(``packed.PackedLinear``) reads them well below what the machine can stream; this GEMM (16-column
panels, one 64-byte line per inner step, software prefetch far ahead) reads them faster, and the
whole decode step is shorter with it (measured in docs/serving.md, "Where a decode step's time
went, and the decode kernels": ``bench/decode_kernels.py`` for the products alone,
``bench/serve_engine.py`` with and without ``--no-decode-kernels`` for the step). For more than
``MAX_ROWS`` rows (prefill) the products are timed against MKL's and oneDNN's at start
(``products.ProductChooser``); ``SmallLinear.rows_split`` runs the same panels with a prefill's
rows dealt among the threads instead of the panels, where whole prefills are timed faster so
(``prefill_path.py``).

``add_rms_norm``, ``rotary_``, ``silu_mul``, the elementwise work between the products: one call
each where torch runs five to eight ops of a few microseconds (residual add and RMSNorm; rotary on
q and k in place; SiLU(gate) * up). ``backend.KernelBackend`` hands them to the model's one
forward (``packed.py``), between the products of a decode step and of a prefill's packed prompt
tokens alike, shared among the threads, which shortens a prefill too (measured in docs/serving.md,
"Speed", the table of changes).

``store_kv`` and ``decode_attention``, one new token per sequence written to its cache slot and
its row of the decode mirror (``engine/mirror.py``), then attending over the mirror:
each sequence reads only its own keys (no padding, no mask), one task per (sequence, key/value
head) taken dynamically by the threads. ``prefill_attention`` (``prefill_attention.c``): a
prefill's whole new sequence, token i over keys 0 .. i, in tiles of queries against blocks of
keys, one task per (key/value head, block of queries).

``argmax_rows`` (``greedy.c``), the greedy rows' choice: each row's first maximum in one vector
pass, where torch's ``max`` with indices walks a row one float at a time.

``attention_tasks.c``, included by both sources, drives either build's decode attention (its tasks
and threads; the kernel of one query group: ``decode_attention_avx512.c`` and
``decode_attention_vec.c``, included by their build's source) and the key/value store; ``prefill_attention.c``, included by both, the prefill's;
``decode_stack.c``, included by both, composes the same row and panel functions into one call for
all of a decode step's decoder layers (``decode_stack.py``).

Which build (``ISAS``, best first): ``avx512`` is the hand-written ``kernels_avx512.c``;
``avx2`` (AVX2 + FMA) and ``generic`` (the compiler's baseline: SSE2 on x86-64, NEON on aarch64)
are ``kernels_vec.c``, written once with vector types and compiled for each. ``choose``
takes the best one this CPU offers (``tenacia.device.cpu_features``), once, at the engine's start;
``$TENACIA_ISA`` (``avx512``, ``avx2``, ``generic`` or ``torch`` for none) forces one, so a run can
be reproduced exactly. ``backend.cpu_backend`` turns the ``Kernels`` it got (or None) into the
engine's backend; nothing else decides.

How they are compiled, cached and loaded, and when they cannot be: ``build.py``. Nothing here
changes the math: float32 products with float32 accumulation, in a different summation order
(within ~1e-6 relative of ``F.linear``; every ``SmallLinear`` checks itself against ``F.linear``
when it is built); SiLU's exponential is a degree-7 polynomial (relative error < 2e-7, as
float32's own rounding); ``argmax_rows`` gives the index torch's ``max`` gives.

Memory: a layer keeps its weights twice (MKL's packed copy for prefill, the panels for decode).
``EngineConfig.decode_kernels = False`` (``tenacia serve --no-decode-kernels``) keeps one copy.
"""

from __future__ import annotations

import ctypes
import os

import torch
import torch.nn.functional as F
from torch import Tensor

from .build import BUILDS, ISA_ENV, ISAS, Unavailable, library

# Above this many rows MKL's packed GEMM is as fast or faster (measured in docs/serving.md,
# "Where a decode step's time went, and the decode kernels").
MAX_ROWS = 16
# up to MAX_ROWS, rows are padded up to one of these: one kernel pass reads each panel from memory;
# more rows run as they are (the passes after the first 16 rows find the panel in cache)
PADDED_ROWS = (1, 2, 4, 8, 16)
CHECK_ROWS = (1, 3, 16)



def choose(enabled: bool = True) -> tuple[Kernels | None, str]:
    """The kernels the engine uses, chosen once: ``$TENACIA_ISA`` if set, else the best build this
    CPU runs. Returns (kernels, their instruction set) or (None, why there are none)."""
    if not enabled:
        return None, "--no-decode-kernels"
    forced = os.environ.get(ISA_ENV, "").strip()
    if forced:
        if forced == "torch":
            return None, f"{ISA_ENV}=torch"
        if forced not in BUILDS:
            raise ValueError(f"{ISA_ENV}={forced!r} is not one of {', '.join(ISAS)}, torch")
        lib = library(forced)
        return (Kernels(forced, lib), forced) if not isinstance(lib, str) else (None, lib)
    reasons = []
    for isa in ISAS:
        lib = library(isa)
        if not isinstance(lib, str):
            return Kernels(isa, lib), isa
        reasons.append(lib)
    return None, reasons[-1]


def available() -> str | None:
    """None if some build of the kernels runs here (``choose``), else why not."""
    kernels, why = choose()
    return None if kernels is not None else why


MAX_GROUP, MAX_HEAD_DIM = 16, 512  # decode_attention's limits (query heads per key/value head; head size)


class SmallLinear:
    """``y = x @ weight.T + bias`` for ``x`` of shape (rows, in) with rows <= ``MAX_ROWS``.
    Built by ``Kernels.small_linear``; float32 CPU tensors only."""

    def __init__(self, lib: ctypes.CDLL, weight: Tensor, bias: Tensor | None = None):
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise Unavailable(f"float32 CPU weights only, got {weight.dtype} on {weight.device}")
        self._lib = lib
        weight = weight.detach().contiguous()
        self.out_features, self.in_features = weight.shape
        self.bias = bias.detach().float().contiguous() if bias is not None else None
        self.panels = torch.empty(-(-self.out_features // 16) * 16 * self.in_features, dtype=torch.float32)
        lib.tenacia_small_gemm_pack(weight.data_ptr(), self.out_features, self.in_features, self.panels.data_ptr())
        gen = torch.Generator().manual_seed(0)
        for rows in CHECK_ROWS:
            x = torch.randn(rows, self.in_features, generator=gen)
            want = F.linear(x, weight, self.bias)
            if not torch.allclose(self(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max())):
                raise Unavailable(f"the decode GEMM disagrees with F.linear for {rows} rows")

    def __call__(self, x: Tensor) -> Tensor:
        """x: (rows, in) float32 -> (rows, out). Meant for rows <= MAX_ROWS; more run correctly, in
        passes of 16 rows and a shorter last one (``ProductChooser`` times it against MKL's and
        oneDNN's for a prefill)."""
        rows = x.size(0)
        padded = next((p for p in PADDED_ROWS if p >= rows), rows)
        if padded != rows or not x.is_contiguous():
            full = x.new_zeros(padded, self.in_features)
            full[:rows] = x
            x = full
        y = torch.empty(padded, self.out_features, dtype=torch.float32)
        self._lib.tenacia_small_gemm(x.data_ptr(), padded, self.in_features, self.panels.data_ptr(), self.out_features,
                                     self.bias.data_ptr() if self.bias is not None else None, y.data_ptr(),
                                     torch.get_num_threads())
        return y[:rows] if padded != rows else y

    def rows_split(self, x: Tensor) -> Tensor:
        """x: (rows, in) float32 -> (rows, out), the rows shared among the threads (a prefill)."""
        x = x.contiguous()
        y = torch.empty(x.size(0), self.out_features, dtype=torch.float32)
        self._lib.tenacia_gemm_rows(x.data_ptr(), x.size(0), self.in_features, self.panels.data_ptr(),
                                    self.out_features, self.bias.data_ptr() if self.bias is not None else None,
                                    y.data_ptr(), torch.get_num_threads())
        return y


def _check(t: Tensor, name: str) -> None:
    if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(f"{name}: a contiguous float32 CPU tensor, got {t.dtype} on {t.device} "
                         f"(contiguous: {t.is_contiguous()})")


class Kernels:
    """One build of the kernels, for one instruction set (``choose``): the products of few rows
    (``small_linear``) and the elementwise work and attention of a decode step."""

    def __init__(self, isa: str, lib: ctypes.CDLL):
        self.isa, self._lib = isa, lib
        self.decode_stack_fn = lib.tenacia_decode_stack  # decode_stack.DecodeStack's way in
        self.decode_stack_scratch_fn = lib.tenacia_decode_stack_scratch  # the floats of scratch it needs

    def __repr__(self) -> str:
        return f"Kernels({self.isa!r})"

    def small_linear(self, weight: Tensor, bias: Tensor | None = None) -> SmallLinear:
        """The panels of ``weight`` for products of few rows; checks itself against F.linear."""
        return SmallLinear(self._lib, weight, bias)

    def add_rms_norm(self, x: Tensor, delta: Tensor | None, weight: Tensor, eps: float) -> Tensor:
        """``x += delta`` in place (when given), then return RMSNorm(x) * weight; x: (rows, dim)."""
        for t, name in ((x, "x"), (weight, "weight")) + (((delta, "delta"),) if delta is not None else ()):
            _check(t, name)
        out = torch.empty_like(x)
        self._lib.tenacia_add_rms_norm(x.data_ptr(), delta.data_ptr() if delta is not None else None, weight.data_ptr(),
                                       eps, out.data_ptr(), x.size(0), x.size(1), torch.get_num_threads())
        return out

    def rotary_(self, x: Tensor, heads: int, head_dim: int, cos: Tensor, sin: Tensor) -> None:
        """Rotary embedding in place on the first ``heads`` heads of each row of ``x`` (rows, >= heads *
        head_dim), "rotate half" layout; cos, sin: (rows, head_dim). ``head_dim`` even."""
        if head_dim % 2 or x.size(1) < heads * head_dim or cos.shape != (x.size(0), head_dim) or sin.shape != cos.shape:
            raise ValueError(f"rotary_: head_dim {head_dim} must be even, rows of x hold {heads} heads "
                             f"(x: {tuple(x.shape)}), cos and sin ({x.size(0)}, {head_dim}) (got {tuple(cos.shape)})")
        for t, name in ((x, "x"), (cos, "cos"), (sin, "sin")):
            _check(t, name)
        self._lib.tenacia_rotary(x.data_ptr(), x.size(0), x.size(1), heads, head_dim, cos.data_ptr(), sin.data_ptr(),
                                 torch.get_num_threads())

    def silu_mul(self, gate_up: Tensor) -> Tensor:
        """gate_up (rows, 2n) = [gate | up] -> silu(gate) * up, (rows, n)."""
        _check(gate_up, "gate_up")
        rows, n = gate_up.size(0), gate_up.size(1) // 2
        out = torch.empty(rows, n, dtype=torch.float32)
        self._lib.tenacia_silu_mul(gate_up.data_ptr(), gate_up.data_ptr() + 4 * n, 2 * n, rows, n, out.data_ptr(),
                                   torch.get_num_threads())
        return out

    def silu_mul_pair(self, gate: Tensor, up: Tensor) -> Tensor:
        """gate, up (rows, n), two products -> silu(gate) * up, (rows, n)."""
        _check(gate, "gate")
        _check(up, "up")
        if gate.shape != up.shape or gate.dim() != 2:
            raise ValueError(f"silu_mul_pair: gate and up must be the same (rows, n), got {tuple(gate.shape)} {tuple(up.shape)}")
        out = torch.empty_like(gate)
        self._lib.tenacia_silu_mul(gate.data_ptr(), up.data_ptr(), gate.size(1), gate.size(0), gate.size(1),
                                   out.data_ptr(), torch.get_num_threads())
        return out

    def decode_attention(self, q: Tensor, k: Tensor, v: Tensor, lengths: Tensor) -> Tensor:
        """q: (B, H, 1, hd), each sequence's heads contiguous (a view of the fused q/k/v product is
        fine); k, v: (B, KVH, cap, hd) contiguous, sequence b's keys in its first ``lengths[b]`` rows;
        lengths: (B,) int64, each >= 1. Returns softmax(q k^T / sqrt(hd)) v as (B, H, 1, hd)."""
        B, H, _, hd = q.shape
        KVH, cap = k.size(1), k.size(2)
        if q.stride(3) != 1 or q.stride(1) != hd or q.dtype != torch.float32:
            raise ValueError(f"decode_attention: q must be float32 with contiguous heads, got {q.dtype} strides {q.stride()}")
        if H % KVH or H // KVH > MAX_GROUP or hd > MAX_HEAD_DIM:
            raise ValueError(f"decode_attention: {H} query heads on {KVH} key/value heads of size {hd}: needs at most "
                             f"{MAX_GROUP} query heads per key/value head and a head size of at most {MAX_HEAD_DIM}")
        for t, name in ((k, "k"), (v, "v"), (lengths, "lengths")):
            if not t.is_contiguous():
                raise ValueError(f"decode_attention: {name} must be contiguous")
        if lengths.dtype != torch.int64 or lengths.shape != (B,):
            raise ValueError(f"decode_attention: lengths must be ({B},) int64, got {tuple(lengths.shape)} {lengths.dtype}")
        out = torch.empty(B, H, 1, hd, dtype=torch.float32)
        self._lib.tenacia_decode_attention(q.data_ptr(), q.stride(0), k.data_ptr(), v.data_ptr(), cap, lengths.data_ptr(),
                                           B, H, KVH, hd, hd ** -0.5, out.data_ptr(), torch.get_num_threads())
        return out

    def prefill_attention(self, q: Tensor, k: Tensor, v: Tensor, out: Tensor, start: int = 0) -> None:
        """Causal attention of one sequence's n new tokens after ``start`` cached ones
        (``prefill_attention.c``: blocks of queries against blocks of keys). q: (H, n, hd) with
        contiguous heads; k, v: (KVH, start + n, hd), the cached positions then the new ones,
        each head's floats contiguous, any head and token strides (views of the fused q/k/v
        product, as the engine passes them, need no copy); out: (n, H, hd) contiguous, written:
        new token i attends to keys 0 .. start + i."""
        H, n, hd = q.shape
        KVH = k.size(0)
        if q.stride(0) != hd or q.stride(2) != 1 or q.dtype != torch.float32 or out.shape != (n, H, hd):
            raise ValueError(f"prefill_attention: q (H, n, hd) float32 with contiguous heads, out (n, H, hd); got "
                             f"{q.dtype} strides {q.stride()}, out {tuple(out.shape)}")
        if (H % KVH or H // KVH > MAX_GROUP or hd > MAX_HEAD_DIM or start < 0 or k.shape != (KVH, start + n, hd)
                or v.shape != k.shape):
            raise ValueError(f"prefill_attention: {H} query heads, {n} new tokens after {start} on k {tuple(k.shape)}, "
                             f"v {tuple(v.shape)}")
        for t, name in ((k, "k"), (v, "v")):
            if t.dtype != torch.float32 or t.device.type != "cpu" or t.stride(2) != 1:
                raise ValueError(f"prefill_attention: {name} float32 on the CPU with contiguous heads, got {t.dtype} "
                                 f"on {t.device}, strides {t.stride()}")
        _check(out, "out")
        if self._lib.tenacia_prefill_attention(q.data_ptr(), q.stride(1), k.data_ptr(), k.stride(0), k.stride(1),
                                               v.data_ptr(), v.stride(0), v.stride(1), start, n, H, KVH, hd, hd ** -0.5,
                                               out.data_ptr(), torch.get_num_threads()):
            raise MemoryError(f"prefill_attention: no memory for the scratch of {n} tokens")

    def store_rows(self, store: Tensor, slots: Tensor, rows: Tensor) -> None:
        """``store[slots[t]] = rows[t]``: store (slots, KVH, d) contiguous float32, slots (N,) int64
        contiguous, rows (N, KVH, d) float32 with each token's heads contiguous (a view of the
        fused q/k/v product); other layouts go to index_copy_. A slot outside [0, store.size(0))
        raises IndexError before anything is written (the kernel checks every slot first: its
        copy has no bounds of its own; index_copy_ raises its own IndexError)."""
        N, KVH, d = rows.shape
        if (rows.dtype != torch.float32 or rows.stride(2) != 1 or rows.stride(1) != d or not store.is_contiguous()
                or store.shape[1:] != (KVH, d) or slots.dtype != torch.int64 or not slots.is_contiguous()
                or slots.shape != (N,)):
            store.index_copy_(0, slots, rows)
            return
        bad = self._lib.tenacia_store_rows(rows.data_ptr(), rows.stride(0), N, KVH * d, store.data_ptr(), store.size(0),
                                           slots.data_ptr())
        if bad >= 0:
            raise IndexError(f"store_rows: slots must be in [0, {store.size(0)}), got {int(slots[bad])} "
                             f"for token {bad}")

    def argmax_rows(self, logits: Tensor) -> Tensor:
        """Each row's first column of its largest value, (rows,) int64: ``logits.max(dim=1).indices``
        (``greedy.c``), which answers instead for a batch with a NaN or a layout other than float32
        (rows, cols) rows with contiguous columns."""
        if (logits.dim() != 2 or logits.dtype != torch.float32 or logits.device.type != "cpu" or logits.size(1) == 0
                or logits.stride(1) != 1):
            return logits.max(dim=1).indices
        out = torch.empty(logits.size(0), dtype=torch.int64)
        if self._lib.tenacia_argmax_rows(logits.data_ptr(), logits.size(0), logits.size(1), logits.stride(0),
                                         out.data_ptr(), torch.get_num_threads()):
            return logits.max(dim=1).indices
        return out

    def store_kv(self, k: Tensor, v: Tensor, cache_k: Tensor, cache_v: Tensor, slots: Tensor,
                 mirror_k: Tensor, mirror_v: Tensor, lengths: Tensor) -> None:
        """k, v: (B, KVH, 1, hd), each sequence's heads contiguous, the same row stride; cache_k,
        cache_v: one layer's (slots, KVH, hd); slots: (B,) int64; mirror_k, mirror_v: (B, KVH, cap, hd);
        lengths: (B,) int64. Writes k[b], v[b] to cache slot slots[b] and to mirror row lengths[b] - 1."""
        B, KVH, _, hd = k.shape
        if k.stride(0) != v.stride(0) or k.stride(1) != hd or v.stride(1) != hd or k.stride(3) != 1 or v.stride(3) != 1:
            raise ValueError(f"store_kv: k and v need contiguous heads and one row stride, got {k.stride()} {v.stride()}")
        for t, name in ((cache_k, "cache_k"), (cache_v, "cache_v"), (mirror_k, "mirror_k"), (mirror_v, "mirror_v"),
                        (slots, "slots"), (lengths, "lengths")):
            if not t.is_contiguous():
                raise ValueError(f"store_kv: {name} must be contiguous")
        if slots.dtype != torch.int64 or lengths.dtype != torch.int64 or k.dtype != torch.float32:
            raise ValueError("store_kv: float32 keys and values, int64 slots and lengths")
        self._lib.tenacia_store_kv(k.data_ptr(), v.data_ptr(), k.stride(0), B, KVH, hd, cache_k.data_ptr(),
                                   cache_v.data_ptr(), slots.data_ptr(), mirror_k.data_ptr(), mirror_v.data_ptr(),
                                   mirror_k.size(2), lengths.data_ptr())
