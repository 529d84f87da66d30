"""The matrix products of the serving layout, on the CPU: MKL's packed GEMM, and the decode
kernels' panels for products of few rows.

A ``PackedLinear`` holds one projection's weight in the layouts it runs in: MKL's packed layout
(``torch.ops.mkl._mkl_reorder_linear_weight``) where MKL is there, the plain weight otherwise,
and, given the engine's ``kernels.Kernels``, the 16-column panels of ``kernels.SmallLinear`` for
products of at most ``kernels.MAX_ROWS`` rows (a decode step). Each layout checks itself against
``F.linear`` when it is built and is dropped if it disagrees.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from . import kernels as dk

log = logging.getLogger(__name__)


# The row count MKL is told when packing. Any count may be used afterwards, but the layout it
# picks depends on it: for SmolLM2's 30 layers, packing for 128 rows made both a 100-token prompt
# and 16 decode rows faster than packing for 16, packing for 1,600 made both slower, and 64 to
# 256 were about level (measured in docs/serving.md, "Recorded observations").
PACK_ROWS = 128
CHECK_ROWS = (1, 3, 16, 37)


def _mkl_usable(weight: Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch._C.has_mkl
            and hasattr(torch.ops.mkl, "_mkl_linear"))


class PackedLinear:
    """``y = x @ weight.T + bias`` for ``x`` of shape (..., in), with the weight in its fastest
    layout. ``bias`` (out,) or None; every kernel adds it inside the product's own call.
    ``kernels``: also keep the panels of ``kernels.SmallLinear`` for products of few rows."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, *, kernels: dk.Kernels | None = None):
        weight = weight.detach().contiguous()
        self.out_features, self.in_features = weight.shape
        self.bias = bias.detach().contiguous() if bias is not None else None
        self.packed: Tensor | None = None
        self.weight: Tensor | None = weight
        self.small = small_linear(kernels, weight, bias)
        if _mkl_usable(weight):
            try:
                packed = torch.ops.mkl._mkl_reorder_linear_weight(weight, PACK_ROWS)
            except RuntimeError as e:  # an MKL build without packing: keep the plain weight
                log.debug("MKL packing unavailable: %s", e)
                return
            # _mkl_linear reads only the shape of its "original weight" (it falls back to it when
            # the row count differs from the one it is given, which never happens here).
            self._shape = torch.zeros((), dtype=weight.dtype).expand(self.out_features, self.in_features)
            self.packed = packed
            if self._agrees(weight):
                self.weight = None
            else:
                log.warning("MKL packed GEMM disagrees with F.linear; serving with plain weights")
                self.packed = None

    def _agrees(self, weight: Tensor) -> bool:
        gen = torch.Generator().manual_seed(0)
        for rows in CHECK_ROWS:
            x = torch.randn(rows, self.in_features, generator=gen)
            want = F.linear(x, weight, self.bias)
            if not torch.allclose(self(x), want, rtol=1e-4, atol=1e-4 * float(want.abs().max())):
                return False
        return True

    def __call__(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.small is not None and flat.size(0) <= dk.MAX_ROWS:
            return self.small(flat).view(*x.shape[:-1], self.out_features)
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        y = torch.ops.mkl._mkl_linear(flat, self.packed, self._shape, self.bias, flat.size(0))
        return y.view(*x.shape[:-1], self.out_features)


def small_linear(kernels: dk.Kernels | None, weight: Tensor, bias: Tensor | None) -> dk.SmallLinear | None:
    if kernels is None or weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    try:
        return kernels.small_linear(weight, bias)
    except dk.Unavailable as e:
        log.warning("%s; decoding with MKL", e)
        return None
