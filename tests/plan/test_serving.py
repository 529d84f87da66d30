"""Serving: decode batch under a TPOT target, prefill throughput, chips for a demand."""

import dataclasses

import pytest

from tenacia import config
from tenacia.config import ConfigError
from tenacia.plan.serving import ServePlan, decode_step_s, estimate_serving


def _plan(*overrides):
    return config.load(ServePlan, None, list(overrides))


def test_decode_step_grows_with_batch_and_memory_bound_at_small_batch(chips):
    plan = _plan("model.preset='llama-3-405b'", "precision='fp8'")
    h100 = chips["h100"]
    steps = [decode_step_s(plan.model, h100, plan, 8, b) for b in (1, 8, 64, 512)]
    assert all(a < b for a, b in zip(steps, steps[1:], strict=False))
    # batch 1 on 8 H100: reading 405 GB of FP8 weights at 8 x 3.35 TB/s x 0.6 dominates; the
    # rest is 252 latency-bound all-reduces
    weights_s = 405e9 / (8 * 3.35e12 * 0.6)
    assert weights_s < steps[0] < 1.25 * weights_s


def test_tighter_tpot_means_smaller_batches_and_more_chips(chips):
    loose = estimate_serving(_plan("tp=16", "tpot_ms=80"), chips["h800"])
    tight = estimate_serving(_plan("tp=16", "tpot_ms=25"), chips["h800"])
    assert tight.batch < loose.batch and tight.step_s <= 0.025 < loose.step_s <= 0.080
    assert tight.decode_chips > loose.decode_chips
    assert tight.prefill_chips == loose.prefill_chips  # prefill does not depend on TPOT


def test_chips_scale_with_demand_and_shrink_with_cache_hits(chips):
    base = estimate_serving(_plan("tp=16"), chips["h800"])
    double = estimate_serving(_plan("tp=16", "demand.tokens_per_day=2e11"), chips["h800"])
    cached = estimate_serving(_plan("tp=16", "demand.cache_hit_rate=0.9"), chips["h800"])
    assert double.decode_chips >= 2 * base.decode_chips - 16  # whole 16-chip instances
    assert double.prefill_chips >= 2 * base.prefill_chips - 1
    assert cached.prefill_chips < base.prefill_chips and cached.decode_chips == base.decode_chips


def test_more_bandwidth_never_needs_more_chips(chips):
    plan = _plan("model.preset='llama-3-405b'", "precision='fp8'")
    counts = [estimate_serving(plan, dataclasses.replace(chips["h100"], memory_tbs=bw)).chips
              for bw in (1.0, 2.0, 3.35, 6.0)]
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False)) and counts[0] > counts[-1]


def test_unreachable_target_is_a_clear_error(chips):
    with pytest.raises(ConfigError) as e:
        estimate_serving(_plan("model.preset='llama-3-405b'", "tp=1", "tpot_ms=5"), chips["h100"])
    assert e.value.field == "tpot_ms" and "raise tpot_ms or tp" in e.value.allowed
