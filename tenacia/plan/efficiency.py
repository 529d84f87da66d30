"""How fast a chip runs a model's matrix multiplications: from the GEMM shapes, not one number.

A GEMM of an (M x K) by a (K x N) matrix on a chip runs at

    peak x matmul_efficiency(chip) x (M N / (pad(M) pad(N))) x K / (K + k0)

- ``matmul_efficiency``: the fraction of the dense peak a large, well-shaped GEMM reaches on
  this chip family (catalog, with its source);
- tile quantization: outputs are computed in ``TILE`` x ``TILE`` tiles, so M and N are padded
  up to a multiple of it (not below one tile: ``_padded``);
- ``k0`` (``Assumptions.gemm_k_overhead``): each output tile pays a fixed cost (loading its
  first operand tiles, filling the pipeline, writing C) worth ``k0`` steps of its K loop, so a
  GEMM with a short inner dimension (a narrow tensor-parallel shard, an attention head) runs
  below the large-GEMM rate. This is why wide models reach a higher MFU than narrow ones.

A layer's GEMMs are listed forward (``layer_gemms``); backward runs each twice, as the input
gradient (M x N by N x K) and the weight gradient (K x M by M x N). ``shape_factor`` is the
FLOP-weighted harmonic mean of the per-GEMM factors: time = FLOPs / (peak x efficiency x factor).
Attention (flash attention) is two GEMMs per head: scores (K = head width) and the weighted sum
(K = context).
"""

from __future__ import annotations

import math

from .models import ModelSpec

TILE = 128


def gemm_factor(m: float, n: float, k: float, k0: float) -> float:
    """Fraction of the large-GEMM rate an (m x k) @ (k x n) product reaches (module docstring)."""
    pad = _padded(m) * _padded(n)
    return (m * n / pad) * k / (k + k0)


def _padded(x: float) -> float:
    """A dimension padded to whole tiles; below one tile (a small decode batch) kernels use a
    narrower tile or run as a memory-bound GEMV, so no padding is charged there (the roofline's
    memory term bounds such a GEMM)."""
    return math.ceil(x / TILE) * TILE if x >= TILE else x


def shape_factor(gemms: list[tuple[float, float, float]], k0: float, backward: bool = True,
                 counts: list[float] | None = None) -> float:
    """FLOP-weighted harmonic mean of ``gemm_factor`` over forward GEMMs (m, n, k), each run
    ``counts[i]`` times (default once), with each one's two backward GEMMs when ``backward``."""
    flops = time = 0.0
    for (m, n, k), count in zip(gemms, counts or [1.0] * len(gemms), strict=True):
        shapes = [(m, n, k), (m, k, n), (k, n, m)] if backward else [(m, n, k)]
        f = 2 * m * n * k * count
        for shape in shapes:
            flops += f
            time += f / gemm_factor(*shape, k0)
    return flops / time if time else 1.0


def layer_gemms(model: ModelSpec, tp: int, tokens: float, ep: int, moe: bool) -> list[tuple[float, float, float]]:
    """Forward GEMMs (m, n, k) of one layer on one chip: ``tokens`` rows enter the layer on this
    tensor-parallel group; weights are split ``tp`` ways (routed experts are not, and receive
    ``tokens * ep * k / experts`` rows each)."""
    h = model.hidden
    qkv = (model.heads * model.head_dim + 2 * model.kv_heads * model.head_dim) / tp
    out = [(tokens, qkv, h), (tokens, h, model.heads * model.v_head_dim / tp)]
    if not moe:
        return out + [(tokens, 2 * model.ffn / tp, h), (tokens, h, model.ffn / tp)]
    if model.shared_experts:
        width = model.shared_experts * model.expert_ffn / tp
        out += [(tokens, 2 * width, h), (tokens, h, width)]
    rows = tokens * tp * ep * model.experts_per_token / model.experts  # per routed expert
    return out + [(rows, 2 * model.expert_ffn, h), (rows, h, model.expert_ffn)]


def model_shape_factor(model: ModelSpec, tp: int, tokens: float, ep: int, k0: float, backward: bool = True) -> float:
    """``shape_factor`` over every layer's GEMMs and the output head, weighted by FLOPs (forward
    only when not ``backward``: inference)."""
    dense, moe = model.layers - model.moe_layers, model.moe_layers
    gemms, counts = [], []
    for is_moe, layers in ((False, dense), (True, moe)):
        if layers:
            layer = layer_gemms(model, tp, tokens, ep, is_moe)
            gemms += layer
            counts += [layers] * len(layer)
    gemms.append((tokens, model.vocab / tp, model.hidden))
    counts.append(1)
    return shape_factor(gemms, k0, backward, counts)


def attention_shape_factor(model: ModelSpec, context: float, k0: float, backward: bool = True) -> float:
    """Flash attention's two GEMMs per head: scores (K = head width), weighted sum (K = context)."""
    rows = max(context, 1.0)
    return shape_factor([(rows, rows, model.head_dim), (rows, model.v_head_dim, rows)], k0, backward)
