"""Matmul efficiency from GEMM shapes: tile padding and the per-tile fixed cost, by hand."""

import pytest

from tenacia.plan.efficiency import TILE, gemm_factor, model_shape_factor, shape_factor
from tenacia.plan.models import ModelSpec


def test_gemm_factor_by_hand():
    assert TILE == 128
    # a large aligned GEMM: only the K-loop's fixed cost, K / (K + k0)
    assert gemm_factor(8192, 8192, 8192, 384) == pytest.approx(8192 / (8192 + 384))
    assert gemm_factor(8192, 8192, 8192, 0) == 1.0
    # 200 rows pad to 256 tiles: 200/256 of the tile work is useful
    assert gemm_factor(200, 4096, 4096, 0) == pytest.approx(200 / 256)
    # a narrow inner dimension (an attention head, K = 128) pays the fixed cost 4x as much as K = 512
    assert gemm_factor(4096, 4096, 128, 384) == pytest.approx(0.25)


def test_shape_factor_is_the_flop_weighted_harmonic_mean():
    a, b = (4096, 4096, 4096), (4096, 4096, 128)
    fa, fb = gemm_factor(*a, 384), gemm_factor(*b, 384)
    flops_a, flops_b = 2 * 4096 ** 3, 2 * 4096 * 4096 * 128
    expected = (flops_a + flops_b) / (flops_a / fa + flops_b / fb)
    assert shape_factor([a, b], 384, backward=False) == pytest.approx(expected)


def test_wider_models_and_narrower_shards_as_published_megatron_runs_show():
    """MFU grows with width (Megatron: 41.5% at 22B, 56.3% at 1T on A100): the shape factor does."""
    factors = [model_shape_factor(ModelSpec(preset=p), 8, 2048, 1, 384) for p in ("gpt-22b", "gpt-175b", "gpt-1t")]
    assert factors[0] < factors[1] < factors[2] < 1
    wide = ModelSpec(preset="gpt-175b")
    assert model_shape_factor(wide, 8, 2048, 1, 384) < model_shape_factor(wide, 1, 2048, 1, 384)
