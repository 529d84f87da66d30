"""A mixture of experts' loads under replicas: kept with the share that made them (counted once
across salvage, never polluted by audit forwards), appended to the reduced contribution and split
off it exactly."""

from __future__ import annotations

import torch

from tenacia.device import detect
from tenacia.train.replicas.apply import contribution, expert_outcome, gradient_numel, reduced_loads
from tenacia.train.replicas.shares import LocalGradients

from ...model.deepseek_tiny import tiny_config, tiny_model

T, K = 16, 2


def _setup():
    model = tiny_model(tiny_config()).train()
    data = torch.randint(0, 256, (8, T + 1), generator=torch.Generator().manual_seed(3))
    return model, data, list(range(8)), lambda ids: data[ids]


def test_loads_count_each_held_position_once_and_ignore_other_forwards():
    model, _, batch, samples = _setup()
    dev = detect("cpu")
    grads = LocalGradients(model)
    grads.compute(1, [0, 1, 2], batch, samples, 2, dev)
    LocalGradients(model).compute(1, [5, 6], batch, samples, 2, dev)  # an audit of a peer's share
    model.loss(samples([7])[:, :-1], samples([7])[:, 1:])  # a stray training forward
    grads.compute(1, [0, 1, 2, 4], batch, samples, 2, dev)  # salvage: 3 reused, 1 computed
    fresh = LocalGradients(model)
    fresh.compute(1, [0, 1, 2, 4], batch, samples, 4, dev)
    main = 4 * T * K  # the MoE layer sees every position, the MTP block T - 1 of them
    assert grads.loads.sum(1).tolist() == [main, main, 4 * (T - 1) * K]
    assert torch.equal(grads.loads, fresh.loads)
    grads.drop()
    assert grads.loads is None


def test_the_contribution_carries_the_loads_after_the_gradients_and_the_sum_splits_exactly():
    model, _, batch, samples = _setup()
    dev = detect("cpu")
    grads = LocalGradients(model)
    grads.compute(1, [0, 1, 2, 3], batch, samples, 2, dev)
    mine = contribution(model, grads)
    n = gradient_numel(model)
    assert mine.dtype == torch.float32 and mine.numel() == n + grads.loads.numel()
    newcomer = contribution(model, LocalGradients(model))
    assert newcomer.numel() == mine.numel() and not newcomer[n:].any()
    reduced = mine + mine + newcomer  # two sharers of the same counts, one newcomer
    assert torch.equal(reduced_loads(model, reduced), 2 * grads.loads)
    out = expert_outcome(model, reduced)
    before = model.expert_biases().clone()
    model.update_bias(reduced_loads(model, reduced))
    assert out["expert_bias"] == tuple(tuple(b) for b in model.expert_biases().tolist())
    assert not torch.equal(before, model.expert_biases())


def test_the_numeric_state_fingerprint_sees_a_bias_that_differs():
    from tenacia.train.numerics.fingerprint import StateFingerprint

    model = tiny_model(tiny_config())
    state = StateFingerprint(model, torch.optim.AdamW(model.parameters()))
    before = state()
    model.moe_layers()[0].router.expert_bias[3] += 1e-3
    assert state() != before
