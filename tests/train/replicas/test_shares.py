"""Shares of the global batch, and salvage: a re-run of a discarded step reuses what survivors hold."""

import types

import torch

from tenacia.device import detect
from tenacia.model.llama import Llama
from tenacia.shape import ModelConfig
from tenacia.train.replicas import apply as apply_mod
from tenacia.train.replicas.protocol import Vote
from tenacia.train.replicas.shares import LocalGradients, even_shares, salvage_shares
from tenacia.train.step import compute_gradients


def test_even_shares_partition_the_batch():
    assert even_shares([0, 2, 5], 8) == {0: (0, 1, 2), 2: (3, 4, 5), 5: (6, 7)}


def test_salvage_keeps_survivors_shares_and_spreads_the_lost_one_over_the_least_loaded():
    before = even_shares([0, 1, 2, 3], 16)
    after = salvage_shares(before, [0, 2, 3], 16)
    assert after == {0: (0, 1, 2, 3, 4, 7), 2: (5, 8, 9, 10, 11), 3: (6, 12, 13, 14, 15)}
    # a second loss during the re-run, and a healed newcomer (4) that holds nothing yet
    again = salvage_shares(after, [0, 3, 4], 16)
    assert again[0] == after[0] and set(after[3]) <= set(again[3])
    assert sorted(p for s in again.values() for p in s) == list(range(16))
    assert max(map(len, again.values())) - min(map(len, again.values())) <= 1


def test_reused_gradients_equal_a_fresh_computation():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    dev = detect("cpu")
    model = Llama(ModelConfig(preset="micro"))
    data = torch.randint(0, 512, (8, 17))
    batch = list(range(8))
    compute_gradients(model, data[[1, 2, 5, 6]], 2, 8, dev)
    fresh = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
    model.zero_grad(set_to_none=True)

    grads = LocalGradients(model)
    _, tokens, reused = grads.compute(7, [1, 2], batch, lambda ids: data[ids], 2, dev)
    assert (tokens, reused) == (32, 0)
    loss, tokens, reused = grads.compute(7, [1, 2, 5, 6], batch, lambda ids: data[ids], 2, dev)
    assert (tokens, reused) == (64, 2)
    assert torch.allclose(torch.cat([p.grad.reshape(-1) for p in model.parameters()]), fresh, atol=1e-6)
    # another step, or positions that do not cover what is held: computed from scratch
    assert grads.compute(8, [1, 2], batch, lambda ids: data[ids], 2, dev)[2] == 0
    assert grads.compute(8, [3], batch, lambda ids: data[ids], 2, dev)[2] == 0


def test_apply_uses_the_reduced_buffer_and_releases_the_local_share(monkeypatch):
    """Committing a step applies the all-reduced buffer itself (no copy of it), and only then drops
    this member's own gradients, which were kept through the all-reduce for salvage."""
    torch.manual_seed(0)
    dev = detect("cpu")
    model = Llama(ModelConfig(preset="micro"))
    grads = LocalGradients(model)
    grads.compute(3, [0, 1], list(range(4)), lambda ids: torch.randint(0, 512, (len(ids), 17)), 2, dev)
    local = [p.grad for p in model.parameters()]
    reduced = torch.randn(sum(p.numel() for p in model.parameters()))
    expected = reduced.clone()
    seen = {}

    def fake_update(model, optimizer, lr, grad_clip):
        params = list(model.parameters())
        seen["shares_buffer"] = all(p.grad.untyped_storage().data_ptr() == reduced.untyped_storage().data_ptr()
                                    for p in params)
        seen["values"] = torch.cat([p.grad.reshape(-1) for p in params])
        model.zero_grad(set_to_none=True)
        return 0.0

    monkeypatch.setattr(apply_mod, "apply_update", fake_update)
    commits = []
    trainer = types.SimpleNamespace(model=model, optimizer=None, step=2, tokens_seen=0, lr=lambda step: 1e-3,
                                    commit=lambda *a, **k: commits.append((a, k)))
    cfg = types.SimpleNamespace(optim=types.SimpleNamespace(grad_clip=1.0),
                                train=types.SimpleNamespace(batch_size=4), data=types.SimpleNamespace(seq_len=16))
    assert all(g is not None for g in local) and grads.held == [0, 1]
    pending = apply_mod.PendingStep(Vote(replica=0, quorum_id=1, step=3, ok=True), reduced)
    apply_mod.apply_step(trainer, grads, pending, cfg)
    assert seen["shares_buffer"] and torch.equal(seen["values"], expected)
    assert (grads.step, grads.held) == (None, [])
    assert commits == [((0, [], 4 * 16), {"samples": 4})]  # the trainer's one commit path
    assert all(p.grad is None for p in model.parameters())
