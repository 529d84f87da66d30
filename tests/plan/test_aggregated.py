"""Aggregated serving: prompt chunks inside the decode steps (plan/aggregated.py)."""

import math

import pytest

from tenacia import config
from tenacia.config import ConfigError
from tenacia.plan.aggregated import prefill_need, serving_parts
from tenacia.plan.serving import ServePlan, estimate_serving
from tenacia.plan.serving_step import decode_parts

LLAMA_70B = ["model.preset='llama-3-405b'", "model.layers=80", "model.hidden=8192", "model.ffn=28672",
             "model.heads=64", "model.head_dim=128", "model.v_head_dim=128", "model.kv_heads=8",
             "model.vocab=128256", "model.total_params_b=70.6", "model.activated_params_b=70.6"]


def _plan(*overrides):
    return config.load(ServePlan, None, [*LLAMA_70B, "chip='h100'", "precision='fp8'", "tp=2",
                                         "demand.cache_hit_rate=0.0", *overrides])


def test_a_share_of_the_steps_carries_a_whole_prompt(chips):
    """Hand-computed: 25 sequences of 5,000 in / 500 out. Over one sequence's 500 steps the other
    24 are replaced: 24 x 5,000 / 500 = 240 prompt tokens a step, so 240 / 5,000 = 4.8% of the
    steps carry a whole prompt (5,000 <= 8,192 tokens a step). Such a step is compute-bound: the
    GEMMs take 5,025 rows x 2 x 70.6B / 2 chips at 0.6 x 1,978.9 FP8 TFLOPS = 0.299 s (at most
    / 0.9 for their shapes), the prompt's attention 5,000 x 80 x 2 x 64 x 256 x 2,500 / 2 chips at
    0.6 x 989.4 TFLOPS = 0.0276 s over efficiency.py's flash-attention factor: scores at K = 128,
    128 / (128 + 384) x (5,000 / 5,120)^2 = 0.2384, weighted sum 0.9287 x 5,000 / 5,120 = 0.9069,
    their harmonic mean 0.3776: 0.0731 s; then the two all-reduces a layer the step waits for,
    80 x 2 x 5,025 rows x 8,192 x 2 bytes (ring volume 2 x 1/2 of it on 2 chips) at 0.7 x 450 GB/s
    = 0.0418 s; plus the fixed 80 x 71 us."""
    plan = _plan("deployment='aggregated'", "demand.input_len=5000", "demand.output_len=500")
    m, h100 = plan.model, chips["h100"]
    assert prefill_need(plan, 25) == pytest.approx(240)
    parts = serving_parts(m, h100, plan, 2, 25)
    decode, mixed = decode_parts(m, h100, plan, 2, 25)["step_s"], decode_parts(m, h100, plan, 2, 25, 5000)["step_s"]
    assert parts["chunk_share"] == pytest.approx(0.048)
    assert parts["step_s"] == pytest.approx(0.952 * decode + 0.048 * mixed)
    gemms = 5025 * 2 * 70.6e9 / 2 / (0.6 * 1978.9e12)
    attention = 5000 * 80 * 2 * 64 * 256 * 2500 / 2 / (0.6 * 989.4e12) / 0.3776
    all_reduce = 80 * 2 * 5025 * 8192 * 2 / (0.7 * 450e9)
    assert gemms + attention < mixed - 80 * 71e-6 - all_reduce < gemms / 0.9 + attention * 1.01
    assert parts["ttft_s"] == pytest.approx(mixed)  # one chunk: the whole prompt in one step


def test_one_sequence_decodes_as_if_disaggregated_and_prompts_can_outrun_the_budget(chips):
    """At one sequence no other prompt interleaves (its own comes before its first token). Short
    prompts (100 in / 10 out) at 64 sequences need 63 x 100 / 10 = 630 tokens a step: every step
    carries them; at 2,000 sequences 19,990 > 8,192 a step: not sustainable (inf)."""
    agg = _plan("deployment='aggregated'", "demand.input_len=100", "demand.output_len=10")
    dis = _plan("demand.input_len=100", "demand.output_len=10")
    m, h100 = agg.model, chips["h100"]
    assert serving_parts(m, h100, agg, 2, 1)["step_s"] == decode_parts(m, h100, dis, 2, 1)["step_s"]
    parts = serving_parts(m, h100, agg, 2, 64)
    assert parts["chunk_share"] == 1 and parts["chunk_tokens"] == pytest.approx(630)
    assert parts["step_s"] == pytest.approx(decode_parts(m, h100, agg, 2, 64, 630)["step_s"])
    assert math.isinf(serving_parts(m, h100, agg, 2, 2000)["tpot_s"])


@pytest.mark.parametrize("model", [LLAMA_70B, ["model.preset='deepseek-v3'", "chip='h800'", "tp=16"]])
def test_aggregated_throughput_falls_as_the_target_tightens_and_pays_for_its_prompts(chips, model):
    """Monotone in TPOT without clamping; below the disaggregated decode rate at every target (the
    same chips prefill); no separate prefill chips; the first token after the prompt's steps."""
    common = [*model, "demand.input_len=2000", "demand.output_len=500"]
    agg = config.load(ServePlan, None, ["chip='h100'", "precision='fp8'", "tp=2", *common, "deployment='aggregated'"])
    dis = config.load(ServePlan, None, ["chip='h100'", "precision='fp8'", "tp=2", *common])
    chip = chips[agg.chip]
    a, d = estimate_serving(agg, chip), estimate_serving(dis, chip)
    rates = [p["decode_tps_per_chip"] for p in a.curve]
    assert all(x <= y for x, y in zip(rates, rates[1:], strict=False)), rates
    assert rates[0] < rates[-1]
    assert all(x["decode_tps_per_chip"] < y["decode_tps_per_chip"] for x, y in zip(a.curve, d.curve, strict=True)
               if y["decode_tps_per_chip"])
    assert a.prefill_chips == 0 and d.prefill_chips > 0
    assert a.ttft_s >= a.step_parts["mixed_step_s"] > 0


def test_a_deployment_is_one_of_two():
    with pytest.raises(ConfigError, match="deployment"):
        _plan("deployment='mixed'")
    with pytest.raises(ConfigError, match="chunk_tokens"):
        _plan("chunk_tokens=0")
