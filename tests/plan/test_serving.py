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
    tight = estimate_serving(_plan("tp=16", "tpot_ms=40"), chips["h800"])
    assert tight.batch < loose.batch and tight.step_s <= 0.040 < loose.step_s <= 0.080
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


@pytest.mark.parametrize("model, chip, precision", [("deepseek-v3", "h800", "fp8"),
                                                    ("deepseek-v3", "ascend-910c", "int8"),
                                                    ("llama-3-405b", "h100", "fp8")])
def test_throughput_falls_as_the_tpot_target_tightens(chips, model, chip, precision):
    """The curve is computed, never clamped: each point is its own best instance and batch."""
    plan = _plan(f"model.preset='{model}'", f"chip='{chip}'", f"precision='{precision}'")
    curve = estimate_serving(plan, chips[chip]).curve
    rates = [p["decode_tps_per_chip"] for p in curve]
    assert [p["tpot_ms"] for p in curve] == sorted(p["tpot_ms"] for p in curve)
    # never rises as the target tightens (it plateaus only where KV memory, not time, caps the batch)
    assert all(a <= b for a, b in zip(rates, rates[1:], strict=False)), rates
    assert rates[-1] > 1.2 * rates[[r > 0 for r in rates].index(True)]  # the tight end is well below the loose one
    per_chip = [p["batch"] / p["tp"] for p in curve if p["batch"]]  # sequences each chip decodes
    assert per_chip[0] < per_chip[-1]


def test_int8_weights_and_kv_cache_plan_an_ascend_deployment(chips):
    int8 = estimate_serving(_plan("chip='ascend-910c'", "precision='int8'"), chips["ascend-910c"])
    bf16 = estimate_serving(_plan("chip='ascend-910c'", "precision='bf16'"), chips["ascend-910c"])
    assert int8.decode_tps_per_chip > bf16.decode_tps_per_chip  # half the bytes per weight and KV entry
    assert _plan("precision='int8'").kv_bytes == 1.0


def test_expert_imbalance_and_all_to_all_slow_moe_serving(chips):
    base = _plan("tp=32", "assumptions.ep_overlap=0.0")
    balanced = dataclasses.replace(base, expert_imbalance=1.0)
    slow_link = dataclasses.replace(chips["h800"], scale_out_gbs=5.0)
    s = estimate_serving(base, chips["h800"])
    assert estimate_serving(balanced, chips["h800"]).prefill_tps_per_chip > s.prefill_tps_per_chip
    assert estimate_serving(balanced, chips["h800"]).decode_tps_per_chip > s.decode_tps_per_chip
    # prefill runs its own all-to-all over prefill_chips = 32 (4 nodes): a slower scale-out link slows it
    assert estimate_serving(base, slow_link).prefill_tps_per_chip < s.prefill_tps_per_chip


def test_every_moe_layer_pays_the_all_to_all_fixed_cost_and_dense_models_none(chips):
    """Each MoE layer's dispatch + combine pays alltoall_overhead_us per step, inside one
    scale-up domain or across several alike; a dense model has no all-to-all."""
    plan = _plan("tp=16", "assumptions.ep_overlap=0.0")
    free = dataclasses.replace(plan, alltoall_overhead_us=0.0)
    m = plan.model
    for chip in (chips["h800"], dataclasses.replace(chips["h800"], scale_up_domain=16)):
        step, step_free = (decode_step_s(m, chip, p, 16, 1) for p in (plan, free))
        assert step - step_free == pytest.approx(m.moe_layers * plan.alltoall_overhead_us * 1e-6)
    dense = _plan("model.preset='llama-3-405b'", "tp=8")
    dense_free = dataclasses.replace(dense, alltoall_overhead_us=0.0)
    assert decode_step_s(dense.model, chips["h100"], dense, 8, 4) == decode_step_s(dense.model, chips["h100"], dense_free, 8, 4)
