"""The delayed outer step (``replicas.outer.delay``, ``LocalRound._rebase``, ``Speculating.train_ahead``),
in one process over the harness's group: a round's first ``delay`` inner batches start from the
member's own parameters at its last round's end and are rebased on the round's start (the new
global parameters): ``start + (own now - own at the round's end)``. Trained ahead (while the
exchange flies) or in the round's compute, the bits are the same; a checkpoint carries the end of
the round, so a resumed run ends in the bits of the uninterrupted one; a heal drops it."""

import pytest
import torch

from tenacia import checkpoint as ckpt
from tenacia.config import ConfigError
from tenacia.train.replicas.local_round import LocalRound
from tenacia.train.replicas.shares import even_shares

from .outer_harness import load, train

DELAY = ["replicas.sync=diloco", "replicas.outer.delay=2"]
RUN = ["train.steps=3", "optim.warmup_steps=2", "replicas.outer.inner_steps=4", "replicas.outer.lr=0.7",
       "replicas.outer.momentum=0.9"]


def test_the_rebase_on_a_hand_computed_case():
    start, base = [torch.tensor([1.0, 2.0])], [torch.tensor([0.5, 0.5])]
    params = [torch.tensor([0.75, 0.25])]  # trained from base: moved by +0.25 and -0.25
    LocalRound._rebase(params, start, base)
    assert torch.equal(params[0], torch.tensor([1.25, 1.75]))


def test_a_round_trains_its_first_inner_batches_from_its_own_end_then_rebases(tmp_path):
    """Round 2 of a member, replayed by hand: its first ``delay`` inner batches from its end of round
    1, the rebase on round 2's start, the rest; the same bits as the run's (its end of round 2)."""
    _, syncs, _ = train(tmp_path / "run", 2, *RUN[1:], "train.steps=2", "optim.decay_steps=2", *DELAY)
    # the replay, on a member holding the same committed state after round 1 (the run is deterministic)
    again, s_again, _ = train(tmp_path / "again", 2, *RUN[1:], "train.steps=1", "optim.decay_steps=2", *DELAY)
    m, held, cfg = again[0], s_again[0].local(again[0]), again[0].cfg
    params = list(m.model.parameters())
    start = [p.detach().clone() for p in params]  # round 2's start: the new global parameters
    end = s_again[0].outer.round_end  # its own parameters at round 1's end
    assert not all(torch.equal(a, b) for a, b in zip(start, end, strict=True))
    with torch.no_grad():
        for p, v in zip(params, end, strict=True):
            p.copy_(v)
    batch = m.sampler.peek(cfg.step_samples)
    held.inner_size = len(batch) / (cfg.replicas.outer.inner_steps * 2)
    for i, ids in enumerate(held.inner_batches(list(even_shares(range(2), cfg.step_samples)[0]))):
        if i == 2:
            LocalRound._rebase(params, start, end)
        held._inner(2, [batch[p] for p in ids], m.data.train.get, cfg.train.micro_batch_size, m.device, i + 1)
    assert all(torch.equal(a, b) for a, b in zip(params, syncs[0].outer.round_end, strict=True))


def ahead(outcomes: list, delay: int = 2, spoil: bool = False):
    """A ``voted`` hook: each member trains the next round's first ``delay`` inner batches from its own
    end of the round, as ``Replica.train_ahead`` does (``spoil``: from the round's start instead)."""

    def voted(step, trainers, syncs, locals_, pendings):
        outcomes.append([held.speculated for held in locals_])
        cfg = trainers[0].cfg
        if step == cfg.train.steps:
            return
        for r, (t, held) in enumerate(zip(trainers, locals_, strict=True)):
            start = [p.detach().clone() for p in t.model.parameters()] if spoil else [v.clone() for v in held.local]
            batch = t.sampler.ids_at(t.sampler.position + cfg.step_samples, cfg.step_samples)
            share = even_shares(range(len(trainers)), cfg.step_samples)[r]
            done = held.speculate(step + 1, share, batch, t.data.train.get, cfg.train.micro_batch_size, t.device,
                                  sharers=len(trainers), start=start, more=lambda: True, limit=delay)
            assert done == delay

    return voted


def state(trainers, syncs) -> list[torch.Tensor]:
    """Every member's model, inner moments, outer state and end of its last round."""
    out = []
    for t, s in zip(trainers, syncs, strict=True):
        moments = ckpt.optimizer_tensors(t.model, t.optimizer)
        out += [*t.model.parameters(), *(moments[k] for k in sorted(moments)), *s.outer.tensors().values(),
                *s.outer.round_end]
    return out


@pytest.mark.parametrize("spoil", [False, True], ids=["kept", "from-another-start"])
def test_inner_batches_trained_ahead_end_in_the_bits_of_a_round_that_trains_them_itself(tmp_path, spoil):
    plain_t, plain_s, _ = train(tmp_path / "plain", 2, *RUN, *DELAY)
    outcomes: list = []
    ahead_t, ahead_s, _ = train(tmp_path / "ahead", 2, *RUN, *DELAY, voted=ahead(outcomes, spoil=spoil))
    for round_ in outcomes[1:]:
        assert [(o[0], o[2]) for o in round_] == [(2, not spoil)] * 2
    a, b = state(plain_t, plain_s), state(ahead_t, ahead_s)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_run_resumed_from_its_checkpoint_ends_in_the_bits_of_the_uninterrupted_one(tmp_path):
    """Two members stopped after round 2 of 4 and resumed (int2 reduce-scattered, residuals and the
    round's end in the checkpoint) end bit for bit where the uninterrupted run ends; a heal's load
    drops the round's end (the next round then starts from the global parameters)."""
    over = [*DELAY, "replicas.outer.quantize=int2", "replicas.outer.exchange=reduce_scatter",
            "replicas.outer.inner_steps=4", "checkpoint.background=false", "optim.decay_steps=4", "train.steps=4"]

    def save_at_2(trainers):
        if trainers[0].step == 2:
            for t in trainers:
                t.save_checkpoint()

    whole, whole_s, _ = train(tmp_path / "whole", 2, *over)
    train(tmp_path / "cut", 2, *over[:-1], "train.steps=2", after_commit=save_at_2)
    resumed, resumed_s, _ = train(tmp_path / "cut", 2, *over, resume=True)
    a, b = state(whole, whole_s), state(resumed, resumed_s)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    outer = resumed_s[0].outer
    own = outer.own_tensors()
    assert any(k.startswith("own.round_end.") for k in own)
    outer.load(outer.tensors())  # as a heal: the global state only
    assert outer.round_end is None
    outer.load(outer.tensors() | own)
    assert all(torch.equal(x, y) for x, y in zip(outer.round_end, whole_s[0].outer.round_end, strict=True))
    with pytest.raises(ValueError, match="round_end"):
        outer.load(outer.tensors() | {k: v for k, v in own.items() if not k.endswith(outer.names[0])})


@pytest.mark.parametrize("overrides, match", [
    (["replicas.outer.delay=-1"], "delay"), (["replicas.outer.delay=4"], "delay.*inner_steps = 4"),
    (["replicas.outer.delay=1.5"], "delay"),
    (["replicas.outer.delay=1", "replicas.outer.speculate=true"], "outer.delay"),
    (["replicas.sync=streaming", "replicas.outer.delay=1"], "outer.delay")])
def test_bad_delays_name_the_field_and_what_is_allowed(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load(tmp_path, "replicas.sync=diloco", "replicas.outer.inner_steps=4", *overrides)
