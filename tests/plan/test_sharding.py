"""Data-parallel communication (sharding.py), each piece against a hand-computed case: one
collective on a two-level network, the per-layer overlap, and each ZeRO stage's collectives per
micro-batch and per step."""

import dataclasses

import pytest

from tenacia.plan.assumptions import Assumptions
from tenacia.plan.estimate import estimate_training
from tenacia.plan.models import ModelSpec
from tenacia.plan.sharding import (
    DataParallelComm,
    collective_s,
    data_parallel_comm,
    pipelined_exposed,
    ranks_per_domain,
)

from .test_training import explicit

# Llama 3 8B's shape (as held-out-4's torchtitan cases give it)
LLAMA8 = ModelSpec(preset="llama-3-405b", layers=32, hidden=4096, ffn=14336, heads=32, head_dim=128,
                   v_head_dim=128, kv_heads=8, vocab=128256, total_params_b=8.03, activated_params_b=8.03,
                   seq_len=8192)


def test_ranks_per_domain_follow_the_mesh_order():
    assert ranks_per_domain(64, 1, 8) == 8  # FSDP, tp = 1: eight ranks of the group in a node
    assert ranks_per_domain(64, 8, 8) == 1  # tp = 8 fills the node
    assert ranks_per_domain(64, 2, 8) == 4
    assert ranks_per_domain(2, 1, 8) == 2  # a group smaller than the node
    assert ranks_per_domain(64, 1, 384) == 64  # a CloudMatrix supernode holds the whole group


def test_one_collective_is_bound_by_the_domain_egress_not_one_nic(chips):
    """A100 (catalog): NVLink 300 GB/s, one 25 GB/s NIC a GPU, 8 a node, latencies 3 and 10 us;
    comm_efficiency 0.7. 16 GB gathered over 64 ranks:
    - 8 ranks a node (tp = 1): NVLink 63/64 x 16e9 / 300e9 = 0.0525 s; network 7/8 x 16e9 /
      (8 x 25e9) = 0.07 s; max / 0.7 = 0.1 s; + 7 x 10 us + 56 x 3 us = 238 us.
    - 1 rank a node (tp = 8): network 63/64 x 16e9 / 25e9 = 0.63 s / 0.7 = 0.9 s; + 63 x 10 us."""
    a100, a = chips["a100"], Assumptions()
    assert collective_s(16e9, 64, 8, a100, a) == pytest.approx(0.1 + 238e-6)
    assert collective_s(16e9, 64, 1, a100, a) == pytest.approx(0.9 + 630e-6)
    # one node: NVLink only, 7/8 x 16e9 / 300e9 / 0.7 + 7 x 3 us
    assert collective_s(16e9, 8, 8, a100, a) == pytest.approx(7 / 8 * 16e9 / 300e9 / 0.7 + 21e-6)
    assert collective_s(16e9, 1, 1, a100, a) == 0.0
    # as 32 collectives (one a layer): the same bandwidth term, the ring latency 32 times
    assert collective_s(16e9, 64, 8, a100, a, pieces=32) == pytest.approx(0.1 + 32 * 238e-6)


def test_pipelined_overlap_exposes_one_unit_and_the_excess():
    # 4 units, compute 2.5 a unit, comm 1 a unit: only the first unit's comm waits
    assert pipelined_exposed(10.0, 4.0, 4) == pytest.approx(1.0)
    # comm 5 a unit against compute 2.5: 5 + 3 x 2.5
    assert pipelined_exposed(10.0, 20.0, 4) == pytest.approx(12.5)
    assert pipelined_exposed(10.0, 0.0, 4) == 0.0


@pytest.mark.parametrize("zero, micro_fwd, micro_bwd, step_fwd, step_bwd", [
    # gather G = 1 s, reduce-scatter R = 1 s; forward compute F = 4 s, backward B = 8 s, 4 layers
    (0, 0.0, 0.0, 0.0, 0.5),  # all-reduce 2R against B: x = 0.5 < c = 2: 0.5
    (1, 0.0, 0.0, 0.25, 0.25),  # G against F (x = 0.25), R against B (x = 0.25)
    (2, 0.0, 0.25, 0.25, 0.0),  # R every micro-batch's backward; G once a step
    (3, 0.25, 0.5, 0.0, 0.0),  # G forward; G + R backward (x = 0.5 < c = 2); nothing a step
])
def test_each_zero_stage_runs_its_collectives_where_the_papers_put_them(zero, micro_fwd, micro_bwd,
                                                                      step_fwd, step_bwd):
    comm = DataParallelComm(weights_gather=1.0, grads_reduce=1.0)
    fwd, bwd = comm.per_microbatch(zero)
    first, last = comm.per_step(zero)
    assert pipelined_exposed(4.0, fwd, 4) == pytest.approx(micro_fwd)
    assert pipelined_exposed(8.0, bwd, 4) == pytest.approx(micro_bwd)
    assert pipelined_exposed(4.0, first, 4) == pytest.approx(step_fwd)
    assert pipelined_exposed(8.0, last, 4) == pytest.approx(step_bwd)


def test_zero3_when_communication_outlasts_compute():
    """G = R = 8 s, F = 4 s, B = 8 s, 4 layers. Forward: x = 2 > c = 1: 2 + 3 x 1 = 5 (the
    forward takes 2 + 3 x max(1, 2) + 1 = 9 = F + 5). Backward: x = 4 > c = 2: 4 + 3 x 2 = 10."""
    fwd, bwd = DataParallelComm(weights_gather=8.0, grads_reduce=8.0).per_microbatch(3)
    assert pipelined_exposed(4.0, fwd, 4) == pytest.approx(5.0)
    assert pipelined_exposed(8.0, bwd, 4) == pytest.approx(10.0)


def test_fsdp_on_64_a100_end_to_end(chips):
    """Llama 3 8B, FSDP (ZeRO-3) over 64 A100, TP1: each micro-batch all-gathers the BF16 weights
    twice and reduce-scatters the BF16 gradients once, each collective 8 ranks a node; recomputing
    the forward adds no gather (it runs inside the backward's); ZeRO-1 gathers nothing per
    micro-batch."""
    a100, a = chips["a100"], Assumptions()
    fleet = [(a100, 64, 1.0)]
    one = collective_s(2 * LLAMA8.dense_params_b * 1e9, 64, 8, a100, a, pieces=32)  # a layer at a time
    assert one == pytest.approx(collective_s(2 * LLAMA8.dense_params_b * 1e9, 64, 8, a100, a) + 31 * 238e-6)
    assert data_parallel_comm(LLAMA8, a100, 1, 1, 1, 1, 64, a).weights_gather == pytest.approx(one)
    lay = dataclasses.replace(explicit(tp=1, pp=1, zero=3, recompute="none"), microbatch_seqs=1)
    z3 = estimate_training(LLAMA8, fleet, lay, a, "bf16", 1e10, 64).groups[0]
    assert z3.micro.zero == pytest.approx(3 * one)
    full = estimate_training(LLAMA8, fleet, dataclasses.replace(lay, recompute="full"), a, "bf16", 1e10, 64)
    assert full.groups[0].micro.zero == pytest.approx(3 * one)
    # hidden behind 32 layers of compute but the first layer's gather and the last reduce-scatter
    assert z3.micro.zero_exposed == pytest.approx(one / 32 + 2 * one / 32)
    assert z3.grad_sync_s == 0.0
    z1 = estimate_training(LLAMA8, fleet, dataclasses.replace(lay, zero=1, recompute="full"), a, "bf16", 1e10, 64).groups[0]
    assert z1.micro.zero == 0.0 and z1.grad_sync_s == pytest.approx(2 * one / 32)


def test_context_parallel_ranks_share_the_weights_of_their_tensor_parallel_rank(chips):
    """tp = 2, cp = 2, dp = 16 on 8-GPU A100 nodes: the 32 chips holding one half of the weights
    are the context- and data-parallel ranks of one tensor-parallel rank, 8 / 2 = 4 a node."""
    a100, a = chips["a100"], Assumptions()
    comm = data_parallel_comm(LLAMA8, a100, 2, 2, 1, 1, 16, a)
    half = 2 * LLAMA8.dense_params_b * 1e9 / 2
    assert comm.weights_gather == pytest.approx(collective_s(half, 32, 4, a100, a, pieces=32))
