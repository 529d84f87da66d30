"""Sync strategies between sites, by hand: bytes per exchange, the alpha-beta collectives and the
exchange forms, what a round exposes, lock-step against work sized to speed, token efficiency,
the candidates searched, and runs of real sites."""

import math

import pytest

from tenacia.config import ConfigError
from tenacia.plan.links import Link, collective_s
from tenacia.plan.quality import Quality, token_efficiency
from tenacia.plan.scenario import estimate, estimate_with_sync
from tenacia.plan.sites import candidates, lockstep_rate, sized_rate, synced_rate
from tenacia.plan.sync import (
    SyncSearch,
    SyncSpec,
    exchange_bytes,
    exchange_s,
    exposed_per_round,
    wire_bytes,
)

FAST = Link(rtt_ms=0.0, gbit_s=32.0, efficiency=1.0)  # 4e9 bytes/s, no latency


def test_bytes_per_exchange_for_each_compression():
    n = 1024
    assert exchange_bytes(n, SyncSpec(strategy="diloco", compression="fp32"), 2.0) == 4096
    assert exchange_bytes(n, SyncSpec(strategy="diloco", compression="int8", scale_block=64), 2.0) == 1024 + 16 * 4
    assert exchange_bytes(n, SyncSpec(strategy="streaming", compression="int4", scale_block=64), 2.0) == 512 + 16 * 4
    # int2: four codes a byte, 256 bytes of codes, and 16 fp32 scales
    int2 = SyncSpec(strategy="diloco", compression="int2", exchange="all_gather", scale_block=64)
    assert exchange_bytes(n, int2, 2.0) == 256 + 16 * 4
    # top-k: a quarter of the elements, each its int8 value, its share of the scales and a 4-byte index
    topk = SyncSpec(strategy="diloco", compression="int8", scale_block=64, topk=0.25, index_bytes=4)
    assert exchange_bytes(n, topk, 2.0) == 256 * (1 + 4 / 64 + 4)
    # ddp sends gradients at assumptions.grad_reduce_bytes
    assert exchange_bytes(n, SyncSpec(strategy="ddp"), 2.0) == 2048


def test_bytes_on_the_wire_of_each_exchange_form():
    """A site's payload times the copies its collective sends: 2(R-1)/R through the ring and the
    reduce-scatter, R-1 through an all-gather."""
    payload = 1000.0
    dense = {e: SyncSpec(strategy="diloco", compression="int2", exchange=e) for e in ("all_gather", "reduce_scatter")}
    ring = SyncSpec(strategy="diloco", compression="int4")
    assert wire_bytes(payload, 4, dense["reduce_scatter"]) == wire_bytes(payload, 4, ring) == 1500.0
    assert wire_bytes(payload, 4, dense["all_gather"]) == 3000.0
    assert wire_bytes(payload, 3, dense["reduce_scatter"]) == pytest.approx(4000 / 3)
    assert wire_bytes(payload, 3, dense["all_gather"]) == 2000.0
    # top-k over the ring is a ring all-gather: R-1 copies, as the direct all-gather
    assert wire_bytes(payload, 4, SyncSpec(strategy="diloco", compression="int2", topk=0.03)) == 3000.0
    assert wire_bytes(payload, 1, dense["all_gather"]) == 0.0


def test_wire_bytes_match_the_probes_counts():
    """bench/diloco_plain.py counts what tenacia's exchanges send (4 members, blocks of 256;
    docs/benchmarks.md, "Probes of 2026-12-04 18:45-19:18"): fp32 diloco 15.398 B/token, int2
    through the reduce-scatter 1.0245, through the all-gather 2.048. The planner's ratios agree
    within the 4-byte token counts and chunk padding the bench adds (0.2%)."""
    n = 1e6

    def sent(compression: str, exchange: str) -> float:
        spec = SyncSpec(strategy="diloco", compression=compression, exchange=exchange, scale_block=256)
        return wire_bytes(exchange_bytes(n, spec, 2.0), 4, spec)

    fp32, rs, ag = sent("fp32", "reduce_scatter"), sent("int2", "reduce_scatter"), sent("int2", "all_gather")
    assert rs == pytest.approx(1.5 * n * (0.25 + 4 / 256))
    assert fp32 / rs == pytest.approx(15.398 / 1.0245, rel=3e-3)
    assert ag / rs == pytest.approx(2.048 / 1.0245, rel=3e-3)


def test_alpha_beta_collectives_by_hand():
    link = Link(rtt_ms=100.0, gbit_s=100.0, efficiency=1.0)  # alpha 50 ms, 12.5e9 bytes/s
    # ring all-reduce over 4: 2(R-1) = 6 latencies, 2(R-1)/R = 1.5 of the bytes
    assert collective_s("ring_allreduce", 1e9, 4, [link]) == pytest.approx(6 * 0.05 + 1.5 * 1e9 / 12.5e9)
    # ring all-gather of 1e9 from each of 4: 3 latencies, 3 x the bytes
    assert collective_s("ring_allgather", 1e9, 4, [link]) == pytest.approx(3 * 0.05 + 3 * 1e9 / 12.5e9)
    # direct all-gather: one one-way trip, the same 3 x the bytes
    assert collective_s("allgather", 1e9, 4, [link]) == pytest.approx(0.05 + 3 * 1e9 / 12.5e9)
    # reduce-scatter then all-gather, two all-to-alls: two trips, the ring's 1.5 x the bytes
    assert collective_s("reduce_scatter", 1e9, 4, [link]) == pytest.approx(2 * 0.05 + 1.5 * 1e9 / 12.5e9)
    for kind in ("ring_allreduce", "ring_allgather", "allgather", "reduce_scatter"):
        assert collective_s(kind, 1e9, 1, [link]) == 0.0
    # the slowest hop sets the pace: its bandwidth, the largest latency
    slow = Link(rtt_ms=20.0, gbit_s=10.0, efficiency=0.5)  # 0.625e9 bytes/s
    assert collective_s("ring_allreduce", 1e9, 2, [link, slow]) == pytest.approx(2 * 0.05 + 1e9 / 0.625e9)


def test_all_gather_against_reduce_scatter_by_hand():
    """Dense int2 (0.25 + 4/128 bytes an element) over 4 sites at alpha 50 ms, 12.5e9 bytes/s:
    the all-gather pays one trip and 3 copies, the reduce-scatter two trips and 1.5 copies; the
    reduce-scatter wins once 1.5 copies take longer than one trip, 1.5 x payload > 0.05 x 12.5e9,
    a payload over 0.417 GB."""
    link = Link(rtt_ms=100.0, gbit_s=100.0, efficiency=1.0)
    ag, rs = (SyncSpec(strategy="diloco", compression="int2", exchange=e, link=link, scale_block=128)
              for e in ("all_gather", "reduce_scatter"))
    small = exchange_bytes(1e9, ag, 2.0)  # 0.28125 GB
    assert small == exchange_bytes(1e9, rs, 2.0) == pytest.approx(0.28125e9)
    assert exchange_s(small, 4, ag) == pytest.approx(0.05 + 3 * 0.28125e9 / 12.5e9)  # 0.1175 s
    assert exchange_s(small, 4, rs) == pytest.approx(0.10 + 1.5 * 0.28125e9 / 12.5e9)  # 0.13375 s
    large = exchange_bytes(4e9, ag, 2.0)  # 1.125 GB
    assert exchange_s(large, 4, ag) == pytest.approx(0.32) and exchange_s(large, 4, rs) == pytest.approx(0.235)
    # diloco pays it whole each round
    assert exposed_per_round(rs, 4e9, 4, compute_s=10.0, grad_bytes=2.0, dp_overlap=0.5) == pytest.approx(0.235)


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
    assert token_efficiency("ddp", 1, "fp32", "ring", 0.0, q) == 1.0
    assert token_efficiency("diloco", 500, "int8", "ring", 0.0, q) == 1.0  # DiLoCo H=500, INTELLECT-1 int8
    assert token_efficiency("streaming", 2000, "fp32", "ring", 0.0, q) == pytest.approx(1 / (1 + 0.05 * 2))
    costly = Quality(base_cost=0.01, int4_cost=0.02, topk_cost=0.03, cost_per_doubling=0.1, free_inner_steps=100)
    assert token_efficiency("diloco", 400, "int4", "ring", 0.02, costly) == pytest.approx(
        1 / (1 + 0.01 + 0.2 + 0.02 + 0.03))
    assert token_efficiency("diloco", 50, "fp32", "ring", 0.0, costly) == pytest.approx(1 / 1.01)


def test_int2_token_cost_by_exchange_form():
    """tenacia's probes (quality.py): int2 quantized once (the all-gathers) 10% more tokens, twice
    (the reduce-scatter) 11.4%; int4 through the reduce-scatter at fp32's loss, int4_cost 0."""
    q = Quality()
    assert token_efficiency("diloco", 100, "int2", "all_gather", 0.0, q) == pytest.approx(1 / 1.10)
    assert token_efficiency("streaming", 100, "int2", "reduce_scatter", 0.0, q) == pytest.approx(1 / 1.114)
    assert token_efficiency("diloco", 100, "int2", "ring", 0.03, q) == pytest.approx(1 / 1.10)  # a ring all-gather
    assert token_efficiency("diloco", 100, "int4", "reduce_scatter", 0.0, q) == 1.0
    mine = Quality(int2_cost=0.2, int2_reduce_scatter_cost=0.3, topk_cost=0.01)
    assert token_efficiency("diloco", 1000, "int2", "reduce_scatter", 0.0, mine) == pytest.approx(1 / (1 + 0.05 + 0.3))
    assert token_efficiency("diloco", 100, "int2", "all_gather", 0.03, mine) == pytest.approx(1 / 1.21)


def test_candidates_include_int2_and_the_exchange_forms():
    """Every compression x exchange x top-k whose quality was measured: dense int2 not over the
    ring (its sums re-quantized at each hop), top-k not through the reduce-scatter."""
    spec = SyncSpec(strategy="streaming", search=SyncSearch(strategies=["ddp", "diloco"], inner_steps=[100],
                                                            topk=[0.0, 0.03]))
    found = candidates(spec)
    forms = {(c.compression, c.exchange, c.topk) for c in found if c.strategy == "diloco"}
    assert len(found) == 1 + 4 * 3 * 2 - 1 - 4 and len(forms) == len(found) - 1
    assert {("int2", "all_gather", 0.0), ("int2", "reduce_scatter", 0.0), ("int2", "ring", 0.03),
            ("int2", "all_gather", 0.03), ("int4", "reduce_scatter", 0.0), ("fp32", "ring", 0.0)} <= forms
    assert ("int2", "ring", 0.0) not in forms
    assert not any(e == "reduce_scatter" and k > 0 for _, e, k in forms)
    ddp = [c for c in found if c.strategy == "ddp"]
    assert [(c.compression, c.exchange, c.topk) for c in ddp] == [("fp32", "ring", 0.0)]
    only = candidates(SyncSpec(search=SyncSearch(strategies=["diloco"], inner_steps=[10, 100], compressions=["int2"],
                                                 exchanges=["reduce_scatter"])))
    assert [(c.inner_steps, c.compression, c.exchange) for c in only] == [(10, "int2", "reduce_scatter"),
                                                                          (100, "int2", "reduce_scatter")]


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
    (lambda: SyncSpec(strategy="diloco", compression="int2"), "exchange"),  # dense int2 over the ring
    (lambda: SyncSpec(strategy="diloco", exchange="reduce_scatter", topk=0.03), "exchange"),
    (lambda: SyncSpec(strategy="ddp", exchange="all_gather"), "exchange"),
    (lambda: Quality(int2_reduce_scatter_cost=-0.1), "int2_reduce_scatter_cost"),
])
def test_bad_sync_fields_name_themselves(make, field):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.field == field


@pytest.mark.parametrize("make, field, allowed", [
    (lambda: SyncSpec(compression="int3"), "compression", "'fp32', 'int8', 'int4', 'int2'"),
    (lambda: SyncSpec(strategy="diloco", exchange="allreduce"), "exchange", "'ring', 'all_gather', 'reduce_scatter'"),
    (lambda: SyncSearch(exchanges=["ring", "tree"]), "exchanges", "'ring', 'all_gather', 'reduce_scatter'"),
    (lambda: SyncSpec(strategy="diloco", compression="int2"), "exchange", "'all_gather' or 'reduce_scatter'"),
    (lambda: SyncSpec(strategy="diloco", exchange="reduce_scatter", topk=0.03), "exchange", "'ring' or 'all_gather'"),
])
def test_an_unknown_compression_or_exchange_names_the_allowed_values(make, field, allowed):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.field == field and allowed in str(e.value)


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
    nbytes = 22.06e9 * (1 + 4 / 256)
    assert sync.exchange_bytes == pytest.approx(nbytes)
    assert sync.wire_bytes == pytest.approx(nbytes)  # a ring all-reduce over 2 sends 2(R-1)/R = 1 copy
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


def test_top_k_positions_take_the_bytes_their_block_needs():
    """The defaults are the trainer's (blocks of 256, a uint8 position each); a block a byte cannot
    address with one-byte positions is a ConfigError naming index_bytes."""
    spec = SyncSpec(strategy="diloco", compression="int4", exchange="all_gather", topk=0.25)
    assert (spec.scale_block, spec.index_bytes) == (256, 1.0)
    assert exchange_bytes(1024, spec, 2.0) == 256 * (0.5 + 4 / 256 + 1)
    with pytest.raises(ConfigError) as e:
        SyncSpec(strategy="diloco", compression="int4", exchange="all_gather", topk=0.25, scale_block=1024)
    assert e.value.field == "index_bytes" and ">= 2" in str(e.value)
