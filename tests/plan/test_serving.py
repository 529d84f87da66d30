"""Serving: decode batch under a TPOT target, prefill throughput, chips for a demand."""

import dataclasses

import pytest

from tenacia import config
from tenacia.config import ConfigError
from tenacia.plan.serving import ServePlan, estimate_serving
from tenacia.plan.serving_step import (
    StepCosts,
    decode_parts,
    decode_step_s,
    fixed_s,
    gemm_rate,
)


def _plan(*overrides):
    return config.load(ServePlan, None, list(overrides))


def test_decode_step_grows_with_batch_and_memory_bound_at_small_batch(chips):
    plan = _plan("model.preset='llama-3-405b'", "precision='fp8'", "step.layer_overhead_us=0")
    h100 = chips["h100"]
    steps = [decode_step_s(plan.model, h100, plan, 8, b) for b in (1, 8, 64, 512)]
    assert all(a < b for a, b in zip(steps, steps[1:], strict=False))
    # batch 1 on 8 H100: reading 405 GB of FP8 weights (less the embedding, a lookup) at
    # 8 x 3.35 TB/s x 0.9 dominates; the rest is 252 latency-bound all-reduces and one KV cache
    weights_s = (405e9 - 128256 * 16384) / (8 * 3.35e12 * 0.9)
    assert weights_s < steps[0] < 1.1 * weights_s


def test_a_decode_step_is_the_sum_of_its_operators_rooflines(chips):
    """Hand-computed: DeepSeek-V3 in FP8 on 16 H800, 16 sequences (one a chip), all-to-all hidden,
    no fixed cost. Every operator is memory-bound at one row a chip, so the step is the sum of
    the reads: dense weights, the experts the batch touches, one KV cache a chip. A maximum of
    the sums (the old roofline) would give the same here; at 128 sequences a chip attention is
    compute-bound and the GEMMs are still weight reads, and the step is their sum. The 16 chips are
    put in one scale-up domain: no all-to-all floor (test_decode_pays_the_all_to_all_floor...)."""
    h800 = dataclasses.replace(chips["h800"], scale_up_domain=16)
    plan = _plan("precision='fp8'", "step.moe_layer_overhead_us=0", "step.layer_overhead_us=0",
                 "step.moe_layer_kernel_us=0", "step.mla_layer_us=0", "step.comm_overlap=1",
                 "demand.input_len=4000", "demand.output_len=200")
    m, hbm = plan.model, 3.35e12 * 0.9
    dense_bytes = (m.dense_params_b * 1e9 - m.vocab * m.hidden) * 1.0
    touched = 256 / 16 * (1 - (1 - 8 / 256) ** 16)  # experts per chip that 16 tokens reach
    expert_bytes = 58 * touched * 3 * 7168 * 2048 * 1.0
    kv_bytes = 4100 * 61 * 576 * 1.0
    assert decode_step_s(m, h800, plan, 16, 16) == pytest.approx((dense_bytes + expert_bytes + kv_bytes) / hbm, rel=0.02)
    # 128 a chip: MLA attention (absorbed, 2 x 576 wide products over 128 heads) at the BF16 GEMM rate
    attention = 128 * 61 * 2 * 128 * 2 * 576 * 4100 / gemm_rate(h800, "bf16", plan.assumptions)
    assert attention > 128 * kv_bytes / hbm  # compute-bound
    step = decode_step_s(m, h800, plan, 16, 16 * 128)
    assert step > attention + dense_bytes / hbm  # the sum, not the larger of the two


def test_every_layer_pays_the_fixed_cost_once_per_step(chips):
    """50 µs a step, 100 µs a layer everywhere, 7 more a layer of latent attention (DeepSeek's MLA,
    not Llama's GQA), 20 more a MoE layer everywhere, 300 more a MoE layer on an expert-parallel
    instance (more than one chip), whether or not it spans scale-up domains (the published
    all-to-all floor, in both plans, cancels)."""
    for preset, tp, expected_us in (("deepseek-v3", 16, 50 + 61 * 107 + 58 * 320), ("llama-3-405b", 8, 50 + 126 * 100),
                                    ("deepseek-v3", 8, 50 + 61 * 107 + 58 * 320),
                                    ("deepseek-v3", 1, 50 + 61 * 107 + 58 * 20)):
        plan = _plan(f"model.preset='{preset}'", f"tp={tp}", "step.layer_overhead_us=100", "step.mla_layer_us=7",
                     "step.moe_layer_kernel_us=20", "step.moe_layer_overhead_us=300", "step.step_overhead_us=50")
        free = dataclasses.replace(plan, step=StepCosts(layer_overhead_us=0.0, moe_layer_kernel_us=0.0,
                                                        mla_layer_us=0.0, moe_layer_overhead_us=0.0))
        for batch in (1, 64):
            diff = decode_step_s(plan.model, chips["h800"], plan, tp, batch) - decode_step_s(
                plan.model, chips["h800"], free, tp, batch)
            assert diff == pytest.approx(expected_us * 1e-6)


QWEN3_235B = ("model.total_params_b=235.0", "model.activated_params_b=22.0", "model.layers=94", "model.hidden=4096",
              "model.ffn=12288", "model.heads=64", "model.head_dim=128", "model.v_head_dim=128", "model.kv_heads=4",
              "model.kv_dim=0", "model.vocab=151936", "model.moe_layers=94", "model.experts=128",
              "model.shared_experts=0", "model.experts_per_token=8", "model.expert_ffn=1536",
              "model.routing_max_groups=0", "model.extra_activated_params_b=0.0")


def test_only_latent_attention_pays_the_mla_layer_cost(chips):
    """A GQA MoE model (Qwen3-235B-A22B's shape, on one 8-GPU node: no floor) pays 94 x 71 + 94 x
    33.7 µs a step; DeepSeek-V3 (MLA) on the same node pays 61 x (71 + 33.7) + 58 x 33.7 µs."""
    qwen = _plan(*QWEN3_235B, "tp=8")
    assert not qwen.model.is_mla and _plan().model.is_mla
    assert fixed_s(qwen.model, chips["b200"], qwen.step, 8) == pytest.approx((94 * 71 + 94 * 33.7) * 1e-6)
    deepseek = _plan("tp=8")
    assert fixed_s(deepseek.model, chips["b200"], deepseek.step, 8) == pytest.approx(
        (61 * (71 + 33.7) + 58 * 33.7) * 1e-6)


def test_decode_pays_the_all_to_all_floor_unhidden_and_hides_only_the_rest(chips):
    """DeepSeek-V3 on 32 H800 (4 nodes, RDMA): DeepEP's EP32 low-latency dispatch + combine,
    155 + 273 µs, a MoE layer in the fixed cost; the bandwidth all-to-all hides only above it.
    At 4 sequences a chip the bandwidth time (copies 7/8 off-node... 24 of 32 chips remote at the
    most loaded rank's 1.43) is under the floor: nothing left to hide; at 128 it is above."""
    plan = _plan("step.comm_overlap=1")
    m, h800 = plan.model, chips["h800"]
    for per_chip, expected_comm_us in ((4, 0.0), (128, None)):
        bw_us = (per_chip * 1.43 * 8 * 24 / 32 * 7168 * (1 + 2) / (50e9 * 0.7) + 2 * 10e-6) * 1e6
        parts = decode_parts(m, h800, plan, 32, 32 * per_chip)
        assert parts["fixed_s"] == pytest.approx((61 * (71 + 33.7) + 58 * 33.7 + 58 * (155 + 273)) * 1e-6)
        want = 58 * max(0.0, bw_us - (155 + 273)) if expected_comm_us is None else expected_comm_us
        assert parts["comm_s"] * 1e6 == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert 58 * ((128 * 1.43 * 6 * 7168 * 3 / 35e9 + 20e-6) * 1e6 - 428) > 0  # the 128 case hides something
    # inside a CloudMatrix384 (384-chip UB domain): DeepEP-Ascend's EP32 row, 153 + 151 µs, at 160 NPUs
    m910 = _plan("chip='ascend-910c'", "precision='int8'")
    assert decode_parts(m910.model, chips["ascend-910c"], m910, 160, 160)["fixed_s"] == pytest.approx(
        (61 * (71 + 33.7) + 58 * 33.7 + 58 * (153 + 151)) * 1e-6)
    # one 8-GPU NVLink node: no published low-latency table, no floor; prefill never pays one
    assert decode_parts(m, h800, plan, 8, 8)["fixed_s"] == pytest.approx((61 * (71 + 33.7) + 58 * 33.7) * 1e-6)
    assert fixed_s(m, h800, plan.step, 32, decode=False) == pytest.approx((61 * (71 + 33.7) + 58 * 33.7) * 1e-6)


def test_int8_runs_at_the_int8_peak_where_the_catalog_has_one(chips):
    a = _plan().assumptions
    assert gemm_rate(chips["ascend-910c"], "int8", a) == pytest.approx(2 * gemm_rate(chips["ascend-910c"], "bf16", a))
    assert gemm_rate(chips["a100"], "int8", a) == gemm_rate(chips["a100"], "bf16", a)  # no INT8 figure: BF16 rate


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
    plan = _plan("model.preset='llama-3-405b'", "precision='fp8'", "tpot_ms=100")
    counts = [estimate_serving(plan, dataclasses.replace(chips["h100"], memory_tbs=bw)).chips
              for bw in (1.0, 2.0, 3.35, 6.0)]
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False)) and counts[0] > counts[-1]


def test_unreachable_target_is_a_clear_error(chips):
    with pytest.raises(ConfigError) as e:
        estimate_serving(_plan("model.preset='llama-3-405b'", "tp=1", "tpot_ms=40"), chips["h100"])
    assert e.value.field == "tpot_ms" and "no instance holds the weights plus one sequence's KV cache" in e.value.allowed
    # the weights fit, the fixed cost (15.3 ms a token) is under 20 ms, one sequence is not: the
    # message gives that sequence's time per token and its parts (CloudMatrix's decode instance)
    plan = _plan("chip='ascend-910c'", "precision='int8'", "tp=160", "tpot_ms=20", "demand.input_len=4096",
                 "demand.output_len=256", "speculation.draft_tokens=2", "speculation.accepted=1.7")
    one = decode_parts(plan.model, chips["ascend-910c"], plan, 160, 1)
    with pytest.raises(ConfigError) as e:
        estimate_serving(plan, chips["ascend-910c"])
    assert f"{one['tpot_s'] * 1000:.1f} ms a token at the fastest, on tp=160" in e.value.allowed
    assert f"fixed costs {one['fixed_s'] * 1000:.1f} ms" in e.value.allowed and one["tpot_s"] > 0.020
    with pytest.raises(ConfigError) as e:  # the fixed costs alone are longer than the target
        estimate_serving(_plan("tp=16", "tpot_ms=30", "step.layer_overhead_us=100", "step.moe_layer_kernel_us=0",
                               "step.mla_layer_us=0", "step.moe_layer_overhead_us=200"), chips["h800"])
    # 16 H800 span two 8-chip domains: 61 x 100 + 58 x (200 + DeepEP's EP16 118 + 195) µs = 35.9 ms
    assert e.value.field == "tpot_ms" and "fixed cost alone on 16 chips: 35.9 ms a token" in e.value.allowed
    assert "DeepEP over RDMA's EP16 row for EP16" in e.value.allowed
    with pytest.raises(ConfigError) as e:  # searched instances: none pays less than one chip's 61 x (71 + 33.7) + 58 x 33.7 µs
        estimate_serving(_plan("tpot_ms=8"), chips["h800"])
    assert "fixed cost alone on 1 chips: 8.3 ms a token" in e.value.allowed


@pytest.mark.parametrize("model, chip, precision", [("deepseek-v3", "h800", "fp8"),
                                                    ("deepseek-v3", "ascend-910c", "int8"),
                                                    ("llama-3-405b", "h100", "fp8")])
def test_throughput_falls_as_the_tpot_target_tightens(chips, model, chip, precision):
    """The curve is computed, never clamped: each point is its own best instance and batch.
    Short requests (1,000 + 200 tokens), so that KV memory does not cap the batch of 405B on one
    H100 node before the loosest target (it would at the default 2,000 + 500)."""
    plan = _plan(f"model.preset='{model}'", f"chip='{chip}'", f"precision='{precision}'",
                 "demand.input_len=1000", "demand.output_len=200")
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
    base = _plan("tp=32", "step.comm_overlap=0.0")
    balanced = dataclasses.replace(base, step=dataclasses.replace(base.step, expert_imbalance=1.0))
    slow_link = dataclasses.replace(chips["h800"], scale_out_gbs=5.0)
    s = estimate_serving(base, chips["h800"])
    assert estimate_serving(balanced, chips["h800"]).prefill_tps_per_chip > s.prefill_tps_per_chip
    # decode: on 4 nodes the all-to-all sits under DeepEP's EP32 floor at this batch (the floor decides);
    # in one 32-chip domain (no published floor) the most loaded rank's copies slow it
    one_domain = dataclasses.replace(chips["h800"], scale_up_domain=32)
    assert estimate_serving(balanced, one_domain).decode_tps_per_chip > estimate_serving(base, one_domain).decode_tps_per_chip
    # prefill runs its own all-to-all over prefill_chips = 32 (4 nodes): a slower scale-out link slows it
    assert estimate_serving(base, slow_link).prefill_tps_per_chip < s.prefill_tps_per_chip


def test_micro_batch_overlap_hides_the_all_to_all_behind_compute(chips):
    """Decode on 32 H800 put in one 32-chip NVLink domain (no published low-latency floor there):
    every token's 8 copies, 31/32 of them to other chips over NVLink."""
    exposed = _plan("step.comm_overlap=0")
    hidden = _plan("step.comm_overlap=1")
    m, h800 = exposed.model, dataclasses.replace(chips["h800"], scale_up_domain=32)
    per_chip = 4  # few enough that the all-to-all is shorter than the weight reads it hides behind
    volume = 58 * per_chip * 1.43 * 8 * 31 / 32 * 7168 * (1 + 2) / (200e9 * 0.7)  # s, most loaded rank
    comm = volume + 58 * 2 * 3e-6
    diff = decode_step_s(m, h800, exposed, 32, 32 * per_chip) - decode_step_s(m, h800, hidden, 32, 32 * per_chip)
    assert diff == pytest.approx(comm, rel=1e-6)


def test_node_limited_prefill_copies_cross_domains_at_the_mean_load(chips):
    """Prefill on 32 H800 (4 nodes): each token reaches at most 4 nodes (here all 4), one copy
    per remote node (3/4 of them remote: 4 x 3/4 copies), forwarded inside the node; the
    scale-out volume does not wait for the most loaded expert, the NVLink volume does."""
    from tenacia.plan.serving_step import _all_to_all_s

    plan = _plan("step.moe_layer_overhead_us=0")
    m, h800 = plan.model, chips["h800"]
    out = 4 * 3 / 4 * 2000 * 7168 * 3 / (50e9 * 0.7)  # one 2,000-token prompt a chip, FP8 + BF16
    up = 8 * 7 / 32 * 2000 * 4.0 * 7168 * 3 / (200e9 * 0.7)
    assert _all_to_all_s(m, h800, plan, 32, 2000, node_limited=True) == pytest.approx(
        58 * (max(out, up) + 2 * 10e-6))


def test_prefill_all_to_all_holds_a_share_of_the_cores_while_hidden(chips):
    """While hidden communication runs, compute has 1 - share of the cores. Hand-computed with a
    share of 0.2: compute 1 s under 2 s of communication stretches to 1 / 0.8 = 1.25 s, still
    hidden (step 2 s); compute 2 s over 1 s of communication becomes 2 + 0.2 x 1 = 2.2 s. Prefill
    pays it; decode (low-latency kernels) does not."""
    from tenacia.plan.serving_step import _step, prefill_tps_per_chip

    assert _step(1.0, 2.0, 0.0, 1.0, 0.2) == pytest.approx(2.0)
    assert _step(2.0, 1.0, 0.0, 1.0, 0.2) == pytest.approx(2.2)
    assert _step(2.0, 1.0, 0.5, 0.5, 0.2) == pytest.approx(2.0 + 0.2 * 0.5 + 0.5 + 0.5)
    free, held = _plan("step.prefill_comm_core_share=0"), _plan("step.prefill_comm_core_share=0.2")
    h800 = chips["h800"]
    assert prefill_tps_per_chip(held.model, h800, held) < prefill_tps_per_chip(free.model, h800, free)
    assert decode_step_s(held.model, h800, held, 32, 1024) == decode_step_s(free.model, h800, free, 32, 1024)
    with pytest.raises(ConfigError) as e:
        _plan("step.prefill_comm_core_share=1")
    assert e.value.field.endswith("prefill_comm_core_share")


def test_ascend_all_to_all_runs_at_its_measured_efficiency(chips):
    """910C decode on 32 chips, inside one UB domain: every token's 8 copies, 31/32 of them to
    other chips, INT8 dispatch + BF16 combine, at 0.25 of UB's 392 GB/s (DeepEP-Ascend's
    measured EP32 bandwidth), not the plan's comm_efficiency (0.7)."""
    from tenacia.plan.serving_step import _all_to_all_s

    plan = _plan("chip='ascend-910c'", "precision='int8'")
    m, c = plan.model, chips["ascend-910c"]
    volume = 8 * 31 / 32 * 4 * 1.43 * 7168 * (1 + 2) / 392e9  # s at the full link
    assert _all_to_all_s(m, c, plan, 32, 4, node_limited=False) == pytest.approx(58 * (volume / 0.25 + 2 * 3e-6))
    default = dataclasses.replace(c, alltoall_efficiency=None)
    assert _all_to_all_s(m, default, plan, 32, 4, node_limited=False) == pytest.approx(58 * (volume / 0.7 + 2 * 3e-6))


def test_speculative_decoding_verifies_drafts_and_emits_accepted_tokens(chips):
    """Draft 2, accept 2: every GEMM carries the rows of twice the batch, the KV cache is read once
    a sequence, the drafts cost one layer's share of the step, and a token takes half a step."""
    h800 = chips["h800"]
    spec = _plan("tp=16", "speculation.draft_tokens=2", "speculation.accepted=2")
    plain = _plan("tp=16")
    s = decode_parts(spec.model, h800, spec, 16, 16 * 32)
    p2 = decode_parts(plain.model, h800, plain, 16, 16 * 64)
    assert s["dense_s"] == p2["dense_s"] and s["experts_s"] == p2["experts_s"] and s["comm_s"] == p2["comm_s"]
    compute = s["attention_s"] + s["dense_s"] + s["experts_s"]
    assert s["draft_s"] == pytest.approx((compute + s["fixed_s"]) / 61)
    assert s["tpot_s"] == pytest.approx(s["step_s"] / 2)
    with pytest.raises(ConfigError) as e:
        _plan("speculation.draft_tokens=2", "speculation.accepted=2.5")
    assert e.value.field == "speculation.accepted"


def test_fp8_attention_runs_at_the_fp8_rate(chips):
    """128 sequences a chip on 16 H800: MLA's absorbed attention is compute-bound, so FP8
    (FlashMLA-FP8) halves it."""
    bf16, fp8 = _plan("tp=16"), _plan("tp=16", "attention_precision='fp8'")
    a = decode_parts(bf16.model, chips["h800"], bf16, 16, 16 * 128)
    b = decode_parts(fp8.model, chips["h800"], fp8, 16, 16 * 128)
    assert a["attention_bound"] == "compute" and b["attention_s"] == pytest.approx(a["attention_s"] / 2, rel=1e-3)
    with pytest.raises(ConfigError) as e:  # a chip with no FP8 figure: the field that asked for it
        estimate_serving(_plan("chip='ascend-910c'", "precision='int8'", "attention_precision='fp8'"), chips["ascend-910c"])
    assert e.value.field == "attention_precision"


def test_two_batch_overlap_hides_the_floor_behind_the_other_micro_batch(chips):
    """DeepSeek-V3 on 32 H800, 128 sequences a chip. Without the option the floor (EP32: 155 + 273
    µs a MoE layer) is paid unhidden. With it, two micro-batches of 64 a chip: the chip computes
    2c, each micro-batch cycles c + a with a = max(all-to-all of 64 a chip, floor), so the step is
    max(2c, c + a) + the fixed cost less the floor (hand check from the half batch's parts)."""
    off, on = _plan(), _plan("step.two_batch_overlap=true")
    m, h800 = off.model, chips["h800"]
    half = decode_parts(m, h800, off, 32, 32 * 64)
    c = half["attention_s"] + half["dense_s"] + half["experts_s"]
    floor = 58 * (155 + 273) * 1e-6
    a = max(half["comm_s"] + floor, floor)  # comm_s is the bandwidth time above the floor
    fixed = (61 * (71 + 33.7) + 58 * 33.7) * 1e-6 + floor
    assert decode_parts(m, h800, on, 32, 32 * 128)["step_s"] == pytest.approx(max(2 * c, c + a) + fixed - floor)
    # a dense model or one chip has no all-to-all: the option changes nothing
    assert decode_parts(m, h800, on, 1, 64)["step_s"] == decode_parts(m, h800, off, 1, 64)["step_s"]
    with pytest.raises(ConfigError) as e:
        _plan("step.two_batch_overlap=2")
    assert e.value.field == "step.two_batch_overlap"


def test_the_fixed_costs_are_their_published_derivations():
    """layer_overhead_us: gpt-fast's BF16 Llama-2 rows on A100-80GB (README: tokens/s and GB/s a
    row, the GB/s over tokens/s being the bytes a token each GPU reads), each token's time less
    those bytes at 0.9 x 2.039 TB/s, over the layers; the median. moe_layer_kernel_us: gpt-fast's
    batch-1 BF16 Mixtral 8x7B rows (mixtral-moe/README.md, 2 / 4 / 8 A100) the same way, its bytes
    a token by hand from its shape (12,748,587,008 parameters: 32 layers of GQA attention 4,096 x
    (4,096 + 2 x 1,024) + 4,096 x 4,096, two experts of 3 x 4,096 x 14,336 and an 8-way gate, and
    a 32,000 x 4,096 head) split tp ways, less the Llama-2 7B row on as many GPUs (same width and
    depth, dense); the median. mla_layer_us: the rest of TensorRT-LLM's batch-1 DeepSeek-R1 on 8
    B200 (9.01 ms a token, 0.67 ms of weight reads) over its 61 latent-attention layers once every
    layer and its 58 MoE layers have paid theirs."""
    import statistics

    rows = [(32, 104.9, 1397.31), (32, 168.84, 1181.99), (32, 254.02, 955.83), (32, 328.43, 704.10),
            (80, 21.32, 1481.87), (80, 38.01, 1340.76), (80, 62.50, 1135.29)]
    per_layer = [(1 / tps - gbs / tps / (0.9 * 2039)) / layers * 1e6 for layers, tps, gbs in rows]
    costs = StepCosts()
    assert costs.layer_overhead_us == pytest.approx(statistics.median(per_layer), abs=0.5)
    mixtral_params = 32 * ((4096 + 2 * 1024) * 4096 + 4096 * 4096 + 2 * 3 * 4096 * 14336 + 4096 * 8) + 32000 * 4096
    assert mixtral_params == 12_748_587_008
    mixtral = {tp: (1 / tps - mixtral_params * 2 / tp / (0.9 * 2039e9)) / 32 * 1e6
               for tp, tps in ((2, 96.67), (4, 155.35), (8, 227.82))}
    llama_7b = dict(zip((2, 4, 8), per_layer[1:4], strict=True))
    moe = statistics.median(mixtral[tp] - llama_7b[tp] for tp in (2, 4, 8))
    assert moe == pytest.approx(33.67, abs=0.01)  # 106.2 - 65.9, 92.6 - 58.9, 82.9 - 58.6
    assert costs.moe_layer_kernel_us == pytest.approx(moe, abs=0.05)
    assert costs.mla_layer_us == pytest.approx((9010 - 670 - 61 * costs.layer_overhead_us - 58 * moe) / 61, abs=0.05)


QWEN3_8B_BS1 = ("chip='h100'", "precision='bf16'", "tp=1", "max_batch=1", "tpot_ms=1000", "demand.input_len=233",
                "demand.output_len=221", "demand.cache_hit_rate=0.0", "model.preset='llama-3-405b'",
                "model.total_params_b=8.1907", "model.activated_params_b=8.1907", "model.layers=36",
                "model.hidden=4096", "model.ffn=12288", "model.heads=32", "model.head_dim=128",
                "model.v_head_dim=128", "model.kv_heads=8", "model.vocab=151936", "model.extra_activated_params_b=0.0")


def test_each_stack_pays_its_derived_layer_cost_and_vllm_reproduces_its_source(chips):
    """GPUStack's Qwen3-8B on one H100 (BF16, ShareGPT: 23,260 in / 22,061 out over 100 prompts):
    vLLM's mean TPOT at concurrency 1 is 7.28 ms; with stack 'vllm' the planner's step is within 1%.
    The other stacks move it by their per-layer difference over 36 layers (hand-computed:
    SGLang (57.0 - 62.3) x 36 = -190.8 µs, TensorRT-LLM (70.4 - 62.3) x 36 = +291.6 µs); an
    explicit layer_overhead_us overrides the stack's; an unknown stack is an error naming it."""
    from tenacia.plan.serve_plan import STACK_LAYER_US

    assert StepCosts().layer_overhead_us == STACK_LAYER_US["gpt-fast"] == 71.0
    steps = {}
    for stack in STACK_LAYER_US:
        plan = _plan(*QWEN3_8B_BS1, f"step.stack='{stack}'")
        assert plan.step.layer_overhead_us == STACK_LAYER_US[stack]
        steps[stack] = decode_step_s(plan.model, chips["h100"], plan, 1, 1)
    assert steps["vllm"] * 1e3 == pytest.approx(7.28, rel=0.01)
    assert (steps["sglang"] - steps["vllm"]) * 1e6 == pytest.approx(-190.8, abs=0.01)
    assert (steps["tensorrt-llm"] - steps["vllm"]) * 1e6 == pytest.approx(291.6, abs=0.01)
    assert _plan(*QWEN3_8B_BS1, "step.stack='vllm'", "step.layer_overhead_us=0").step.layer_overhead_us == 0
    with pytest.raises(ConfigError) as e:
        _plan("step.stack='ollama'")
    assert e.value.field == "step.stack"


def test_a_cache_hit_skips_computing_its_prefix_not_attending_to_it(chips):
    """A computed prompt token attends to the cached prefix and half the computed rest:
    3,620 x (0.563 + 0.437 / 2) = 2,829.03 tokens (DeepSeek's prompt and hit rate), 1,810 without
    hits. On one chip (no all-to-all) a computed token's time grows by exactly the attention over
    the extra 3,620 x 0.563 / 2 tokens of context."""
    from tenacia.plan.efficiency import attention_shape_factor
    from tenacia.plan.serving_step import prefill_tps_per_chip

    hit, cold = (_plan("model.preset='llama-3-405b'", "prefill_chips=1", "demand.input_len=3620",
                       f"demand.cache_hit_rate={h}") for h in (0.563, 0.0))
    assert hit.demand.prefill_context == pytest.approx(2829.03) and cold.demand.prefill_context == 1810
    m, h100, a = hit.model, chips["h100"], hit.assumptions
    rate = gemm_rate(h100, hit.attention_precision, a) * attention_shape_factor(m, 3620, a.gemm_k_overhead, backward=False)
    extra = m.attention_flops_fwd(3620 * 0.563 / 2) / rate
    assert 1 / prefill_tps_per_chip(m, h100, hit) - 1 / prefill_tps_per_chip(m, h100, cold) == pytest.approx(extra)
