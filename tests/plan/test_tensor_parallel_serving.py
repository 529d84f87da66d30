"""Tensor-parallel serving: the all-reduces a step waits for, and a prefill instance split as
the decode one is (plan/serving_step.py)."""

import dataclasses

import pytest

from tenacia import config
from tenacia.plan.serving import ServePlan
from tenacia.plan.serving_step import decode_parts

from .test_serving import QWEN3_235B


def _plan(*overrides):
    return config.load(ServePlan, None, list(overrides))


def test_a_tensor_parallel_step_waits_for_its_all_reduces(chips):
    """A tensor-parallel decode step's all-reduces inside one NVLink node are priced by bandwidth
    alone (their latency is in layer_overhead_us, derived from 1-8 GPU rows that include them),
    and the step waits for them whatever ``comm_overlap`` says (that is the MoE all-to-all's):
    Llama-3 405B on 8 H100, 64 sequences, 2 all-reduces of 64 x 16,384 BF16 values a layer at
    0.7 x 450 GB/s, 2 x 126 x 7/4 x 2 MiB / 315 GB/s = 2.94 ms, added to the operators' sum."""
    h100 = chips["h100"]
    want = 2 * 126 * 2 * 7 / 8 * 64 * 16384 * 2 / (450e9 * 0.7)
    for overlap in (1.0, 0.0):
        plan = _plan("model.preset='llama-3-405b'", "chip='h100'", "precision='fp8'", "tp=8",
                     f"step.comm_overlap={overlap}")
        parts = decode_parts(plan.model, h100, plan, 8, 64)
        assert parts["comm_s"] == pytest.approx(want)
        assert parts["step_s"] == pytest.approx(parts["attention_s"] + parts["dense_s"] + want + parts["fixed_s"])
    # an MoE instance with tensor-parallel attention all-reduces the same way: Qwen3-235B on 8 B200,
    # 16 sequences, 2 x 94 x 7/4 x 16 x 4,096 x 2 bytes at 0.7 x 900 GB/s
    b200 = chips["b200"]
    qwen = _plan(*QWEN3_235B, "chip='b200'", "precision='bf16'", "tp=8", "attention_parallel='tensor'")
    parts = decode_parts(qwen.model, b200, qwen, 8, 16)
    assert parts["comm_s"] == pytest.approx(2 * 94 * 2 * 7 / 8 * 16 * 4096 * 2 / (900e9 * 0.7))
    assert parts["step_s"] == pytest.approx(parts["attention_s"] + parts["dense_s"] + parts["experts_s"]
                                            + parts["comm_s"] + parts["fixed_s"])


def test_prefill_splits_the_model_as_the_decode_instance_does(chips):
    """With attention_parallel='tensor' (and for a dense model) a prefill instance is the decode
    instance's tp chips, tensor-parallel: every chip takes the 8 prompts' rows through 1/8 of each
    weight, so the expert imbalance does not slow it, and it waits for two all-reduces a layer of
    8 x 1,024 rows: Qwen3-235B on 8 B200, 94 x 2 x 7/4 x 8,192 x 4,096 x 2 bytes / (0.7 x 900
    GB/s) = 0.0350 s a step of 1,024 tokens a chip (hand-computed: the step less the same step on
    a link a million times faster). With 'data' the experts spread over 32 chips (DeepSeek's EP32)."""
    from tenacia.plan.serving_step import prefill_tps_per_chip

    b200 = chips["b200"]
    base = (*QWEN3_235B, "chip='b200'", "precision='bf16'", "demand.input_len=1024", "demand.cache_hit_rate=0.0")
    tensor = _plan(*base, "attention_parallel='tensor'")
    m = tensor.model
    assert prefill_tps_per_chip(m, b200, tensor, 8) == pytest.approx(
        prefill_tps_per_chip(m, b200, _plan(*base, "attention_parallel='tensor'", "prefill_chips=8")))
    fast = dataclasses.replace(b200, scale_up_gbs=b200.scale_up_gbs * 1e6)
    all_reduce = 94 * 2 * 2 * 7 / 8 * 8 * 1024 * 4096 * 2 / (0.7 * 900e9)
    step = 1024 / prefill_tps_per_chip(m, b200, tensor, 8) - 1024 / prefill_tps_per_chip(m, fast, tensor, 8)
    assert step == pytest.approx(all_reduce, rel=1e-5)
    balanced = _plan(*base, "attention_parallel='tensor'", "step.expert_imbalance=1")
    assert prefill_tps_per_chip(m, b200, balanced, 8) == prefill_tps_per_chip(m, b200, tensor, 8)
    data = _plan(*base)  # the decode tp does not size it: 32 chips
    assert prefill_tps_per_chip(m, b200, data, 8) == prefill_tps_per_chip(m, b200, _plan(*base, "prefill_chips=32"), 1)
