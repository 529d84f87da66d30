"""Tensor-parallel serving: an MoE instance split like a dense one, the KV copies past the KV
heads, the all-reduces a step waits for, and a prefill instance split as the decode one is
(plan/serving_step.py)."""

import dataclasses

import pytest

from tenacia import config
from tenacia.config import ConfigError
from tenacia.plan.serving import ServePlan
from tenacia.plan.serving_step import decode_parts, weight_bytes_per_chip

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
        assert parts["comm_kind"] == "all-reduce"
    # an MoE instance with tensor-parallel attention all-reduces the same way: Qwen3-235B on 8 B200,
    # 16 sequences, 2 x 94 x 7/4 x 16 x 4,096 x 2 bytes at 0.7 x 900 GB/s
    b200 = chips["b200"]
    qwen = _plan(*QWEN3_235B, "chip='b200'", "precision='bf16'", "tp=8", "attention_parallel='tensor'")
    parts = decode_parts(qwen.model, b200, qwen, 8, 16)
    assert parts["comm_s"] == pytest.approx(2 * 94 * 2 * 7 / 8 * 16 * 4096 * 2 / (900e9 * 0.7))
    assert parts["step_s"] == pytest.approx(parts["attention_s"] + parts["dense_s"] + parts["experts_s"]
                                            + parts["comm_s"] + parts["fixed_s"])
    data = _plan(*QWEN3_235B, "chip='b200'", "precision='bf16'", "tp=8")
    assert decode_parts(data.model, b200, data, 8, 16)["comm_kind"] == "all-to-all"  # which may hide


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


def test_tensor_parallel_attention_splits_an_moe_instance_like_a_dense_one(chips):
    """Qwen3-235B-A22B in BF16 on 8 B200 at one sequence (SGLang's plain --tp 8), hand-computed:
    with attention_parallel='tensor' each chip reads 1/8 of the dense weights (less the embedding
    lookup) and 1/8 of the 8 experts the one token touches in each of 94 layers; with 'data' it
    reads the dense weights whole. The tensor instance holds 235B / 8 parameters a chip, the data
    one the dense weights whole plus 1/8 of the experts; no all-to-all floor either way (one node)."""
    b200 = chips["b200"]
    tensor = _plan(*QWEN3_235B, "chip='b200'", "precision='bf16'", "tp=8", "attention_parallel='tensor'")
    data = _plan(*QWEN3_235B, "chip='b200'", "precision='bf16'", "tp=8")
    m = tensor.model
    hbm = b200.memory_tbs * 1e12 * (b200.hbm_efficiency or 0.9)
    dense_bytes = (m.dense_params_b * 1e9 - 151936 * 4096) * 2
    expert_bytes = 94 * 8 * 3 * 4096 * 1536 * 2
    t, d = decode_parts(m, b200, tensor, 8, 1), decode_parts(m, b200, data, 8, 1)
    assert t["dense_s"] == pytest.approx(dense_bytes / 8 / hbm)
    assert d["dense_s"] == pytest.approx(dense_bytes / hbm)
    assert t["experts_s"] == pytest.approx(expert_bytes / 8 / hbm)
    assert t["fixed_s"] == d["fixed_s"] == pytest.approx((94 * 71 + 94 * 33.7) * 1e-6)
    assert weight_bytes_per_chip(m, 8, "bf16", "tensor") == pytest.approx(235e9 * 2 / 8)
    assert weight_bytes_per_chip(m, 8, "bf16") == pytest.approx((m.dense_params_b + m.expert_params_b / 8) * 2e9)
    with pytest.raises(ConfigError) as e:
        _plan("attention_parallel='expert'")
    assert e.value.field == "attention_parallel"


def test_tensor_parallelism_past_the_kv_heads_copies_the_cache(chips):
    """Llama 3 405B has 8 KV heads: at tp=16 each KV head lives on two chips, so the instance holds
    two copies of every sequence's cache and each chip reads as much cache a sequence as at tp=8.
    A latent cache (DeepSeek's MLA) split tensor-parallel is on every chip; data-parallel, once.
    Hand-computed memory batch at tp=16: 16 x (80 GB x 0.9 - 405B / 16 in FP8) / (2,500 tokens x
    126 x 2 x 8 x 128 elements x 1 byte x 2 copies)."""
    from tenacia.plan.serving import _memory_batch
    from tenacia.plan.serving_step import kv_copies

    h100 = chips["h100"]
    llama = _plan("model.preset='llama-3-405b'", "chip='h100'", "precision='fp8'", "tp=16")
    assert [kv_copies(llama.model, llama, tp) for tp in (1, 8, 16, 32)] == [1, 1, 2, 4]
    deepseek_tp, deepseek_dp = _plan("attention_parallel='tensor'"), _plan()
    assert kv_copies(deepseek_tp.model, deepseek_tp, 8) == 8 and kv_copies(deepseek_dp.model, deepseek_dp, 8) == 1
    kv_seq = 2500 * 126 * 2 * 8 * 128 * 1.0
    assert _memory_batch(llama, h100, 16) == int(16 * (80e9 * 0.9 - 405e9 / 16) // (kv_seq * 2))
    read = {tp: decode_parts(llama.model, h100, llama, tp, 64)["attention_s"] for tp in (8, 16)}
    assert read[16] == pytest.approx(read[8])  # memory-bound at 64 sequences: the same cache bytes a chip
