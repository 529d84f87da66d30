"""Layout features, each against a hand-computed case: pipeline bubbles against their closed
forms, recomputation, context parallelism, ZeRO stages, and a layout given in part."""

import dataclasses

import pytest

from tenacia.config import ConfigError
from tenacia.plan.assumptions import Assumptions
from tenacia.plan.estimate import estimate_training
from tenacia.plan.layout import Layout, memory_per_chip
from tenacia.plan.models import ModelSpec
from tenacia.plan.search import search_layout
from tenacia.plan.training import hardware_flops_per_token, model_flops_per_token

from .test_training import explicit

LLAMA = ModelSpec(preset="llama-3-405b")


@pytest.mark.parametrize("schedule, v, pp, bubble", [
    ("1f1b", 1, 16, 15),  # pp - 1
    ("interleaved", 4, 16, 15 / 4),  # (pp - 1) / v
    ("interleaved", 7, 16, 15 / 7),
    ("zb-h1", 1, 16, 5),  # (pp - 1)(F + B - W) with F = B = W = 1/3
    ("zero-bubble", 1, 16, 0),  # (pp - 1)(F + B - 2W) = 0
    ("dualpipe", 1, 16, 7 / 3),  # (pp/2 - 1)(F&B + B - 3W) = (pp/2 - 1)/3
    ("1f1b", 1, 1, 0),
])
def test_bubble_of_each_schedule_is_its_closed_form(schedule, v, pp, bubble):
    assert Layout(schedule=schedule, virtual_stages=v).bubble_microbatches(pp) == pytest.approx(bubble)


def test_step_is_microbatches_plus_bubble_times_the_microbatch(chips):
    """Hand computation: 2,048 sequences over DP128 = 16 micro-batches per replica; the step is
    (16 + bubble) micro-batch times + gradient reduction + optimizer."""
    fleet = [(chips["h100"], 16384, 2.0)]
    for schedule, v, bubble in (("1f1b", 1, 15), ("interleaved", 5, 3), ("zb-h1", 1, None)):
        est = estimate_training(LLAMA, fleet, explicit(tp=8, pp=16, schedule=schedule, virtual_stages=v,
                                                       recompute="selective"),
                                Assumptions(), "bf16", 1e12, 2048)
        g = est.groups[0]
        if bubble is None:  # ZB-H1: (pp - 1)(F + B - W) = 15 (1 - 2W), W this layout's own
            bubble = 15 * (1 - 2 * g.micro.weight_grad)
        assert est.bubble == pytest.approx(bubble)
        assert est.step_time_s == pytest.approx((16 + bubble) * g.micro.total + g.grad_sync_s + g.optimizer_s)


@pytest.mark.parametrize("schedule, bubble", [
    ("zb-h1", 7 * (1 - 2 * 0.25)),  # (pp - 1)(F + B - W), F + B + W = 1
    ("zero-bubble", 7 * (1 - 3 * 0.25)),  # (pp - 1)(F + B - 2W)
    ("dualpipe", 3 * (1 + 0.45 - 3 * 0.25)),  # (pp/2 - 1)(F&B + B - 3W), F&B = 1, B = 1 - 0.3 - 0.25
])
def test_zero_bubble_schedules_keep_a_bubble_when_weight_gradients_weigh_less_than_a_third(schedule, bubble):
    """Hand-computed: pp = 8, F = 0.3, W = 0.25 of a micro-batch."""
    assert Layout(schedule=schedule).bubble_microbatches(8, forward=0.3, weight_grad=0.25) == pytest.approx(bubble)


def test_weight_gradients_are_a_third_of_the_matmuls_and_zero_bubble_does_not_always_win(chips):
    """W = the weight-gradient GEMMs: 2 of the 6 matmul FLOPs per parameter (2 of 8 under full
    recomputation), so below a third of a micro-batch once attention, elementwise work and
    communication count; ZB-H2 then keeps (pp - 1)(1 - 3W) of bubble, and at long sequences
    (attention, all B, weighs more) interleaving with many chunks beats it."""
    fleet = [(chips["h100"], 16384, 2.0)]
    for schedule, recompute, passes, per_w in (("zb-h1", "selective", 3, 2), ("zero-bubble", "full", 4, 3)):
        est = estimate_training(LLAMA, fleet, explicit(tp=8, pp=16, schedule=schedule, recompute=recompute),
                                Assumptions(), "bf16", 1e12, 2048)
        m = est.groups[0].micro
        assert m.weight_grad == pytest.approx(m.matmul / passes / m.total) and m.weight_grad < 1 / 3
        assert est.bubble == pytest.approx(15 * (1 - per_w * m.weight_grad)) and est.bubble > 0
    with pytest.raises(ConfigError):  # ZB-H2's 2pp - 1 micro-batches in flight: selective recomputation no longer fits
        estimate_training(LLAMA, fleet, explicit(tp=8, pp=16, schedule="zero-bubble", recompute="selective"),
                          Assumptions(), "bf16", 1e12, 2048)
    long = dataclasses.replace(LLAMA, seq_len=131072)
    steps = {s: estimate_training(long, fleet, explicit(tp=8, cp=16, pp=16, schedule=s, virtual_stages=v,
                                                        recompute="full"), Assumptions(), "bf16", 1e12, 128)
             for s, v in (("zero-bubble", 1), ("interleaved", 7))}
    assert steps["interleaved"].step_time_s < steps["zero-bubble"].step_time_s


def test_interleaving_multiplies_pipeline_sends_and_activation_memory(chips):
    a, fleet = Assumptions(), [(chips["h100"], 16384, 2.0)]
    one = estimate_training(LLAMA, fleet, explicit(tp=8, pp=16, schedule="1f1b", recompute="selective"), a, "bf16", 1e12, 2048)
    four = estimate_training(LLAMA, fleet, explicit(tp=8, pp=16, schedule="interleaved", virtual_stages=4,
                                                    recompute="selective"), a, "bf16", 1e12, 2048)
    assert four.groups[0].micro.pp == pytest.approx(4 * one.groups[0].micro.pp)
    act = one.groups[0].memory.activations - 4.0 * 8192 * LLAMA.vocab / 8  # minus the logits
    act4 = four.groups[0].memory.activations - 4.0 * 8192 * LLAMA.vocab / 8
    assert act4 == pytest.approx(act * (1 + 15 / (16 * 4)))  # Narayanan et al.: 1 + (p-1)/(p v)


def test_recomputation_hardware_flops_and_memory():
    """Full recomputation runs the forward twice: 8 FLOPs per parameter instead of 6; MFU counts 6."""
    n, attn = LLAMA.matmul_params, LLAMA.attention_flops_fwd(LLAMA.seq_len / 2)
    assert model_flops_per_token(LLAMA) == pytest.approx(6 * n + 3 * attn)
    assert hardware_flops_per_token(LLAMA, "none") == pytest.approx(6 * n + 3.5 * attn)
    assert hardware_flops_per_token(LLAMA, "full") == pytest.approx(8 * n + 4.5 * attn)
    mem = {r: memory_per_chip(LLAMA, explicit(tp=8, pp=16, recompute=r), 8, 16, 1, 128, 12.0).activations
           for r in ("none", "selective", "full")}
    assert mem["none"] > mem["selective"] > mem["full"]
    # full: one BF16 layer input per token and layer, 8,192 tokens, split 8 ways, plus FP32 logits
    assert mem["full"] == pytest.approx((8192 * 2 * 16384 * 126 + 4 * 8192 * LLAMA.vocab) / 8)


def test_context_parallelism_splits_the_sequence(chips):
    long = dataclasses.replace(LLAMA, seq_len=131072)
    a, fleet = Assumptions(), [(chips["h100"], 16384, 2.0)]
    one = memory_per_chip(long, explicit(tp=8, pp=16, cp=1, recompute="full"), 8, 16, 1, 128, 12.0)
    four = memory_per_chip(long, explicit(tp=8, pp=16, cp=4, recompute="full"), 8, 16, 1, 32, 12.0)
    assert four.activations == pytest.approx(one.activations / 4)
    est = estimate_training(long, fleet, explicit(tp=8, pp=16, cp=16, recompute="full"), a, "bf16", 1e12, 128)
    assert est.layout.dp == 8 and est.groups[0].replicas * 8 * 16 * 16 == 16384
    # cp=16 leaves 8,192 tokens per rank: the same matmul work per chip as an 8K-token sequence
    short = estimate_training(LLAMA, fleet, explicit(tp=8, pp=16, recompute="full"), a, "bf16", 1e12, 2048)
    assert est.groups[0].micro.matmul == pytest.approx(short.groups[0].micro.matmul)
    with pytest.raises(ConfigError) as e:
        estimate_training(LLAMA, fleet, explicit(tp=8, pp=16, cp=3), a, "bf16", 1e12, 2048)
    assert e.value.field == "layout.cp"


def test_zero_stages_shard_states_and_zero3_gathers_weights(chips):
    use = {z: memory_per_chip(LLAMA, explicit(tp=8, pp=16, zero=z), 8, 16, 1, 128, 12.0) for z in (0, 1, 2, 3)}
    params = 405e9 / 128  # per chip of a TP8 PP16 replica
    assert use[0].optimizer == pytest.approx(12 * params) and use[1].optimizer == pytest.approx(12 * params / 128)
    assert use[1].gradients == pytest.approx(2 * params) and use[2].gradients == pytest.approx(2 * params / 128)
    assert use[3].weights < use[2].weights / 4
    a, fleet = Assumptions(), [(chips["h100"], 16384, 2.0)]
    z1 = estimate_training(LLAMA, fleet, explicit(tp=8, pp=16, zero=1, recompute="full"), a, "bf16", 1e12, 2048)
    z3 = estimate_training(LLAMA, fleet, explicit(tp=8, pp=16, zero=3, recompute="full"), a, "bf16", 1e12, 2048)
    assert z1.groups[0].micro.zero == 0 < z3.groups[0].micro.zero and z3.step_time_s > z1.step_time_s


def test_a_layout_given_in_part_fixes_those_fields_and_searches_the_rest(chips):
    fleet = [(chips["h100"], 16384, 2.0)]
    given = Layout(tp=8, pp=16, cp=1, ep=1, schedule="interleaved")
    best, fits = search_layout(LLAMA, fleet, given, Assumptions(), "bf16", 1e12, 2048)
    lay = best.layout
    assert (lay.tp, lay.pp, lay.cp, lay.schedule) == (8, 16, 1, "interleaved") and fits >= 1
    assert lay.virtual_stages > 1 and lay.recompute in ("none", "selective", "full") and lay.zero in (1, 2, 3)
    # the search's answer is the best of every explicit alternative it had
    for v in (2, 4, 7):
        for recompute in ("none", "selective", "full"):
            try:
                other = estimate_training(LLAMA, fleet, dataclasses.replace(lay, dp=0, virtual_stages=v,
                                                                            recompute=recompute),
                                          Assumptions(), "bf16", 1e12, 2048)
            except ConfigError:
                continue
            assert best.step_time_s <= other.step_time_s * (1 + 1e-9)
    # a field that cannot suit the model is an error naming it, even in a search
    with pytest.raises(ConfigError) as e:
        search_layout(LLAMA, fleet, Layout(tp=3), Assumptions(), "bf16", 1e12, 2048)
    assert e.value.field == "layout.tp"


def test_a_layout_of_a_year_searches_only_what_was_published_by_then(chips):
    """A 2020 run (before interleaving, selective recomputation and zero-bubble) gets 1F1B and
    no or full recomputation, and its step is the hand-computed 1F1B one: 16 micro-batches
    (2,048 sequences over DP128) + pp - 1 = 15 bubble micro-batch times + reduction + optimizer.
    Today's search on the same shape does better; a 2021 run may interleave; a fixed technique
    published later than the year is an error naming its field."""
    fleet = [(chips["h100"], 16384, 2.0)]
    shape = dict(tp=8, pp=16, cp=1, ep=1, microbatch_seqs=1)
    old, _ = search_layout(LLAMA, fleet, Layout(**shape, year=2020), Assumptions(), "bf16", 1e12, 2048)
    lay = old.layout
    assert lay.schedule == "1f1b" and lay.recompute in ("none", "full")
    g = old.groups[0]
    assert old.step_time_s == pytest.approx((16 + 15) * g.micro.total + g.grad_sync_s + g.optimizer_s)
    today, _ = search_layout(LLAMA, fleet, Layout(**shape), Assumptions(), "bf16", 1e12, 2048)
    assert today.step_time_s < old.step_time_s
    y2021, _ = search_layout(LLAMA, fleet, Layout(**shape, year=2021), Assumptions(), "bf16", 1e12, 2048)
    assert y2021.layout.schedule in ("1f1b", "interleaved") and y2021.layout.recompute != "selective"
    for field, value in (("schedule", "zero-bubble"), ("recompute", "selective")):
        with pytest.raises(ConfigError) as e:
            Layout(**{field: value}, year=2021)
        assert e.value.field == field and "2021" in e.value.allowed
    with pytest.raises(ConfigError) as e:
        Layout(cp=2, year=2022)
    assert e.value.field == "cp"
