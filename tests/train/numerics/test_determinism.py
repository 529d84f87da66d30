"""The ground every numeric verdict stands on, proven on the machine the suite runs on: a share
computed again from the same state with one thread gives the same bits, whether this replica or
another one computes it, in one call or replaying the chunks a salvaged step was computed in; and
the fingerprint sees any single flipped bit anywhere in the state."""

import types

import pytest
import torch

from tenacia import hooks
from tenacia.device import detect
from tenacia.model.llama import Llama
from tenacia.shape import ModelConfig
from tenacia.train.config import NumericsConfig
from tenacia.train.numerics.fingerprint import fingerprint, state_fingerprint
from tenacia.train.replicas.apply import flat_gradients
from tenacia.train.replicas.numeric_member import NumericMember, audit_plan
from tenacia.train.replicas.shares import LocalGradients
from tenacia.train.step import build_optimizer

BATCH = 8


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def replica(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(preset="micro")
    model = Llama(cfg)
    data = torch.randint(0, cfg.vocab_size, (64, 33), generator=torch.Generator().manual_seed(7))
    device = detect("cpu")
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, device=device)
    trainer = types.SimpleNamespace(
        model=model, optimizer=optimizer, device=device, cfg=types.SimpleNamespace(train=types.SimpleNamespace(batch_size=BATCH)),
        sampler=types.SimpleNamespace(peek=lambda n: list(range(10, 10 + n))),
        data=types.SimpleNamespace(train=types.SimpleNamespace(get=lambda ids: data[torch.tensor(ids) % 64])))
    grads = LocalGradients(model)
    return trainer, grads, NumericMember(NumericsConfig(), trainer, grads, micro_batch_size=2)


def share(trainer, grads, step, positions):
    return grads.compute(step, positions, trainer.sampler.peek(BATCH), trainer.data.train.get, 2, trainer.device)


def test_a_share_recomputed_here_or_on_another_replica_gives_the_same_bits():
    t, g, member = replica()
    loss, _, _ = share(t, g, 3, [0, 1, 2, 3])
    _, original = member.outcome(3, flat_gradients(t.model), loss)
    assert member.recompute(3, g.chunks, own=True) == original  # its own re-execution
    t2, g2, member2 = replica()
    share(t2, g2, 3, [4, 5, 6, 7])  # the peer's own share, which its audit must leave alone
    own_before = fingerprint([flat_gradients(t2.model)])
    assert member2.recompute(3, [(0, 1, 2, 3)], own=False) == original
    assert fingerprint([flat_gradients(t2.model)]) == own_before


def test_a_salvaged_share_replays_its_chunks_bit_for_bit():
    t, g, member = replica()
    share(t, g, 5, [0, 1, 2])
    loss, _, reused = share(t, g, 5, [0, 1, 2, 5, 6])  # salvage: kept 3 positions, computed 2 more
    assert reused == 3 and g.chunks == [(0, 1, 2), (5, 6)]
    _, original = member.outcome(5, flat_gradients(t.model), loss)
    t2, g2, member2 = replica()
    assert member2.recompute(5, g.chunks, own=False) == original


def test_a_wrong_number_at_a_tamper_site_changes_the_outcome_and_a_clean_recompute_does_not_reproduce_it():
    t, g, member = replica()
    loss, _, _ = share(t, g, 2, [0, 1])
    _, clean = member.outcome(2, flat_gradients(t.model), loss)

    def flip(site, step, value):
        if site == "local_grads":
            value = value.clone()
            value.view(torch.int32)[17] ^= 1 << 3  # a low mantissa bit: a plausible number
        return value

    stop = hooks.tamper_with(flip)
    try:
        _, wrong = member.outcome(2, flat_gradients(t.model), loss)
    finally:
        stop()
    assert wrong["grad"] != clean["grad"] and member.recompute(2, g.chunks, own=True) == clean


def test_the_state_fingerprint_sees_one_flipped_bit_in_any_weight_or_moment():
    t, g, _ = replica()
    share(t, g, 1, list(range(BATCH)))
    t.optimizer.step()
    before = state_fingerprint(t.model, t.optimizer)
    moments = [v for s in t.optimizer.state.values() for k, v in s.items() if k != "step"]
    for tensor in (next(t.model.parameters()), moments[-1]):
        words = tensor.data.view(-1).view(torch.int32)
        for bit in (0, 22, 30, 31):
            words[words.numel() // 2] ^= 1 << bit
            assert state_fingerprint(t.model, t.optimizer) != before
            words[words.numel() // 2] ^= 1 << bit
            assert state_fingerprint(t.model, t.optimizer) == before


def test_audits_are_drawn_the_same_on_every_member_at_the_rate_asked():
    plans = [audit_plan(s, [0, 1, 2, 3], {}, 1 / 8, seed=1) for s in range(4000)]
    audited = [p for p in plans if p]
    assert 0.09 < len(audited) / len(plans) < 0.16
    assert all(len(p) == 1 and next(iter(p.items()))[0] != next(iter(p.items()))[1] for p in audited)
    assert audit_plan(9, [0, 1, 2], {1: 12}, 0.0, seed=0) == {1: 2}  # a watched replica, every step
    assert audit_plan(13, [0, 1, 2], {1: 12}, 0.0, seed=0) == {}  # ... until its watch ends


def test_the_kept_views_fingerprint_follow_in_place_updates_and_replaced_tensors():
    from tenacia.checkpoint import load_optimizer_tensors, optimizer_tensors
    from tenacia.train.numerics.fingerprint import StateFingerprint

    t, g, _ = replica()
    share(t, g, 1, list(range(BATCH)))
    t.optimizer.step()
    kept = StateFingerprint(t.model, t.optimizer)
    assert kept() == state_fingerprint(t.model, t.optimizer)
    share(t, g, 2, list(range(BATCH)))
    t.optimizer.step()  # in place
    assert kept() == state_fingerprint(t.model, t.optimizer)
    saved = {k: v.clone() for k, v in optimizer_tensors(t.model, t.optimizer).items()}
    next(iter(saved.values())).view(-1)[0] += 1.0
    load_optimizer_tensors(t.model, t.optimizer, saved)  # new moment tensors, as a heal makes
    assert kept() == state_fingerprint(t.model, t.optimizer)
