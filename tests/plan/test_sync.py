"""Sync strategies between sites, by hand: bytes per exchange, the alpha-beta ring, what a round
exposes, lock-step against work sized to speed, token efficiency, and runs of real sites."""

import math

import pytest

from tenacia.config import ConfigError
from tenacia.plan.links import Link, ring_allgather_s, ring_allreduce_s
from tenacia.plan.quality import Quality, token_efficiency
from tenacia.plan.scenario import estimate, estimate_with_sync
from tenacia.plan.sites import lockstep_rate, sized_rate, synced_rate
from tenacia.plan.sync import SyncSearch, SyncSpec, exchange_bytes, exposed_per_round

FAST = Link(rtt_ms=0.0, gbit_s=32.0, efficiency=1.0)  # 4e9 bytes/s, no latency


def test_bytes_per_exchange_for_each_compression():
    n = 1024
    assert exchange_bytes(n, SyncSpec(strategy="diloco", compression="fp32"), 2.0) == 4096
    assert exchange_bytes(n, SyncSpec(strategy="diloco", compression="int8", scale_block=64), 2.0) == 1024 + 16 * 4
    assert exchange_bytes(n, SyncSpec(strategy="streaming", compression="int4", scale_block=64), 2.0) == 512 + 16 * 4
    # top-k: a quarter of the elements, each its int8 value, its share of the scales and a 4-byte index
    topk = SyncSpec(strategy="diloco", compression="int8", scale_block=64, topk=0.25, index_bytes=4)
    assert exchange_bytes(n, topk, 2.0) == 256 * (1 + 4 / 64 + 4)
    # ddp sends gradients at assumptions.grad_reduce_bytes
    assert exchange_bytes(n, SyncSpec(strategy="ddp"), 2.0) == 2048


def test_alpha_beta_ring_by_hand():
    link = Link(rtt_ms=100.0, gbit_s=100.0, efficiency=1.0)  # alpha 50 ms, 12.5e9 bytes/s
    # all-reduce over 4: 2(R-1) = 6 latencies, 2(R-1)/R = 1.5 of the bytes
    assert ring_allreduce_s(1e9, 4, [link]) == pytest.approx(6 * 0.05 + 1.5 * 1e9 / 12.5e9)
    # all-gather of 1e9 from each of 4: 3 latencies, 3 x the bytes
    assert ring_allgather_s(1e9, 4, [link]) == pytest.approx(3 * 0.05 + 3 * 1e9 / 12.5e9)
    assert ring_allreduce_s(1e9, 1, [link]) == ring_allgather_s(1e9, 1, [link]) == 0.0
    # the slowest hop sets the pace: its bandwidth, the largest latency
    slow = Link(rtt_ms=20.0, gbit_s=10.0, efficiency=0.5)  # 0.625e9 bytes/s
    assert ring_allreduce_s(1e9, 2, [link, slow]) == pytest.approx(2 * 0.05 + 1e9 / 0.625e9)


def test_exposed_communication_per_round():
    n = 1e9  # fp32: 4e9 bytes; all-reduce over 2 sites on FAST moves 4e9 bytes in 1 s
    diloco = SyncSpec(strategy="diloco", inner_steps=100, link=FAST)
    assert exposed_per_round(diloco, n, 2, compute_s=50.0, grad_bytes=2.0, dp_overlap=0.5) == pytest.approx(1.0)
    assert exposed_per_round(diloco, n, 2, compute_s=0.01, grad_bytes=2.0, dp_overlap=0.5) == pytest.approx(1.0)
    # over a round of H = 100 steps of 0.5 s: 1 s exposed per 50 s of compute, 2% of the time
    assert 50.0 / (50.0 + exposed_per_round(diloco, n, 2, 50.0, 2.0, 0.5)) == pytest.approx(50 / 51)
    # ddp: BF16 gradients (0.5 s) every step, half hidden, the hidden part at most the step's compute
    ddp = SyncSpec(strategy="ddp", link=FAST)
    assert exposed_per_round(ddp, n, 2, compute_s=10.0, grad_bytes=2.0, dp_overlap=0.5) == pytest.approx(0.25)
    assert exposed_per_round(ddp, n, 2, compute_s=0.1, grad_bytes=2.0, dp_overlap=0.5) == pytest.approx(0.4)
    # streaming, 4 fragments of 0.25 s each, one every H/F = 25 steps
    stream = SyncSpec(strategy="streaming", inner_steps=100, fragments=4, overlap_steps=0, link=FAST)
    assert exposed_per_round(stream, n, 2, compute_s=50.0, grad_bytes=2.0, dp_overlap=0.5) == 0.0
    # 5 ms steps: a fragment's window is 25 x 5 ms = 0.125 s: 4 x 0.125 s late
    assert exposed_per_round(stream, n, 2, compute_s=0.5, grad_bytes=2.0, dp_overlap=0.5) == pytest.approx(0.5)
    # a window of one step (0.1 s) each: 4 x (0.25 - 0.1)
    one = SyncSpec(strategy="streaming", inner_steps=100, fragments=4, overlap_steps=1, link=FAST)
    assert exposed_per_round(one, n, 2, compute_s=10.0, grad_bytes=2.0, dp_overlap=0.5) == pytest.approx(0.6)


def test_lockstep_against_work_sized_to_speed():
    speeds, shares = [1.0, 1.0, 0.5, 0.25], [1.0, 1.0, 1.0, 1.0]
    assert lockstep_rate(shares, speeds) == pytest.approx(4 * 0.25)
    assert sized_rate(speeds) == pytest.approx(2.75)
    # a round of 27.5 tokens (10 s at the sized pace) with 1 s of exposed sync
    assert synced_rate(27.5, sized_rate(speeds), 1.0) == pytest.approx(27.5 / 11)
    assert synced_rate(27.5, lockstep_rate(shares, speeds), 1.0) == pytest.approx(27.5 / 28.5)
    # unequal shares: the member slowest on its own share sets the pace
    assert lockstep_rate([2.0, 1.0], [4.0, 1.0]) == pytest.approx(3.0 / 1.0)


def test_token_efficiency_anchors_and_assumptions():
    q = Quality()
    assert token_efficiency("ddp", 1, "fp32", 0.0, q) == 1.0
    assert token_efficiency("diloco", 500, "int8", 0.0, q) == 1.0  # DiLoCo H=500, INTELLECT-1 int8
    assert token_efficiency("streaming", 2000, "fp32", 0.0, q) == pytest.approx(1 / (1 + 0.05 * 2))
    costly = Quality(base_cost=0.01, int4_cost=0.02, topk_cost=0.03, cost_per_doubling=0.1, free_inner_steps=100)
    assert token_efficiency("diloco", 400, "int4", 0.02, costly) == pytest.approx(1 / (1 + 0.01 + 0.2 + 0.02 + 0.03))
    assert token_efficiency("diloco", 50, "fp32", 0.0, costly) == pytest.approx(1 / 1.01)


@pytest.mark.parametrize("make, field", [
    (lambda: SyncSpec(strategy="ddp", compression="int8"), "compression"),
    (lambda: SyncSpec(strategy="ddp", topk=0.01), "topk"),
    (lambda: SyncSpec(strategy="gossip"), "strategy"),
    (lambda: SyncSpec(strategy="streaming", inner_steps=2, fragments=4), "fragments"),
    (lambda: SyncSpec(topk=1.0), "topk"),
    (lambda: SyncSpec(compression="int3"), "compression"),
    (lambda: Link(gbit_s=0), "gbit_s"),
    (lambda: Link(efficiency=1.5), "efficiency"),
    (lambda: Link(rtt_ms=math.inf), "rtt_ms"),
    (lambda: Quality(cost_per_doubling=-0.1), "cost_per_doubling"),
    (lambda: SyncSearch(inner_steps=[]), "inner_steps"),
    (lambda: SyncSearch(compressions=["fp16"]), "compressions"),
])
def test_bad_sync_fields_name_themselves(make, field):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.field == field


SMALL = [("model", "gpt-22b"), ("tokens", "1e9"), ("global_batch_seqs", "64"),
         ("layout", "tp=8,cp=1,pp=1,ep=1,microbatch_seqs=1,schedule=1f1b,zero=1,recompute=none")]


def test_one_site_diloco_runs_at_ddp_speed(plan_from):
    """One site has no link to cross: diloco at H <= 500 is ddp's estimate, number for number."""
    ddp, _ = estimate(plan_from(flags=[*SMALL, ("fleet", "h100:64")]))
    est, _, sync = estimate_with_sync(plan_from(flags=[*SMALL, ("fleet", "h100:64"), ("sync.strategy", "diloco")]))
    assert estimate_with_sync(plan_from(flags=[*SMALL, ("fleet", "h100:32@x+h800:32@x")]))[2] is None
    assert sync.exposed_lockstep == sync.exchange_bytes == 0 and sync.token_efficiency == 1
    assert est.tokens_per_s == pytest.approx(ddp.tokens_per_s) and est.ideal_s == pytest.approx(ddp.ideal_s)
    assert est.mfu_bf16 == pytest.approx(ddp.mfu_bf16) and est.cost == pytest.approx(ddp.cost)


def test_two_sites_of_different_speed(plan_from):
    flags = [*SMALL, ("fleet", "h100:64@a+h20:64@b"), ("sync.strategy", "diloco"), ("sync.inner_steps", "100"),
             ("sync.compression", "int8"), ("sync.link.rtt_ms", "50"), ("sync.link.gbit_s", "10")]
    est, _, sync = estimate_with_sync(plan_from(flags=flags))
    a, b = sync.sites
    assert (a.batch_seqs, b.batch_seqs) == (32, 32)  # equal work per chip
    assert a.lockstep is a.sized and b.lockstep is b.sized  # one chip type per site
    ra, rb = a.lockstep.tokens_per_s, b.lockstep.tokens_per_s
    assert ra == pytest.approx(32 * 2048 / a.lockstep.step_time_s) and ra > 3 * rb  # H100 against H20
    tokens_round = 100 * 64 * 2048
    # the exchange: 22.06e9 int8 values + scales per site, ring all-reduce over 2 sites
    nbytes = 22.06e9 * (1 + 4 / 128)
    assert sync.exchange_bytes == pytest.approx(nbytes)
    link_s = 2 * 0.025 + nbytes / (10e9 / 8 * 0.7)
    assert sync.exposed_lockstep == pytest.approx(link_s) == sync.exposed_sized
    lock = tokens_round / (tokens_round / (2 * rb) + link_s)
    sized = tokens_round / (tokens_round / (ra + rb) + link_s)
    assert sync.rate_lockstep == pytest.approx(lock) and sync.rate_sized == pytest.approx(sized)
    assert sync.solo_rate == pytest.approx(ra + rb)
    # the plan's default balance is lock-step; its estimate is the synced run
    assert est.tokens_per_s == pytest.approx(lock) and est.ideal_s == pytest.approx(1e9 / lock)
    assert est.chips == 128 and est.cost == pytest.approx(sync.cost_per_s * est.ideal_s)
    sized_est, _, _ = estimate_with_sync(plan_from(flags=[*flags, ("fleet.balance", "proportional")]))
    assert sized_est.tokens_per_s == pytest.approx(sized) and sized > 1.5 * est.tokens_per_s


def test_one_site_of_mixed_chips_lockstep_against_sized(plan_from):
    """Chip types of one site: lock-step is the site's 'slowest' estimate, sized its
    'proportional' one; utilization is measured against the sized (solo) rate."""
    flags = [*SMALL, ("fleet", "h100:64+h20:64"), ("sync.strategy", "diloco")]
    est, _, sync = estimate_with_sync(plan_from(flags=flags))
    slowest, _ = estimate(plan_from(flags=[*SMALL, ("fleet", "h100:64+h20:64")]))
    proportional, _ = estimate(plan_from(flags=[*SMALL, ("fleet", "h100:64+h20:64"), ("fleet.balance", "proportional")]))
    assert sync.rate_lockstep == pytest.approx(slowest.tokens_per_s) == est.tokens_per_s
    assert sync.rate_sized == pytest.approx(proportional.tokens_per_s) == sync.solo_rate
    # 8 replicas of 8 H100 and 8 of 8 H20: lock-step runs all 16 at an H20's pace, 2 r20 / (r100 + r20)
    assert sync.rate_lockstep / sync.rate_sized < 0.5
