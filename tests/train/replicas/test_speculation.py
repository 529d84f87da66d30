"""The speculative outer step (``replicas.outer.speculate``, ``LocalRound.speculate``,
``OuterRounds.start_after``, ``replicas/speculating.py``), in one process over the harness's group:
between a round's reduce and its commit every member trains the next round's first inner batches
ahead. Kept when the start, share and batch it assumed are the round's, bit for bit: the run ends
in the same bits as one without speculation. Redone when not: the same bits again (the inner
moments restored). The commit, the sampler and a checkpoint never see it."""

import pytest
import torch

from tenacia import checkpoint as ckpt
from tenacia.train.replicas.shares import even_shares

from .outer_harness import train

DILOCO = ["replicas.sync=diloco"]
EAGER = ["replicas.sync=streaming", "replicas.outer.fragments=1", "replicas.outer.eager=true"]
RUN = ["train.steps=3", "optim.warmup_steps=2", "replicas.outer.inner_steps=4", "replicas.outer.lr=0.7",
       "replicas.outer.momentum=0.9"]


def speculating(outcomes: list, batches: int = 2, spoil: bool = False):
    """A ``voted`` hook: each member speculates ``batches`` inner batches of the next round, as
    ``Replica.speculate`` does (``spoil``: from its own, pre-average parameters instead of the start
    the commit gives, which no member of two reaches). Records what became of each one, and checks
    that the state a commit or checkpoint reads is untouched."""

    def voted(step, trainers, syncs, locals_, pendings):
        outcomes.append([held.speculated for held in locals_])  # what round ``step`` made of its speculation
        cfg = trainers[0].cfg
        if step == cfg.train.steps:
            return
        for r, (t, s, held, pending) in enumerate(zip(trainers, syncs, locals_, pendings, strict=True)):
            rest = (ckpt.model_tensors(t.model), ckpt.optimizer_tensors(t.model, t.optimizer))
            rest = [{k: v.clone() for k, v in d.items()} for d in rest]
            position = t.sampler.position
            start = [v.clone() for v in held.local] if spoil else s.start_after(t, held, pending)
            share = even_shares(range(len(trainers)), cfg.step_samples)[r]
            batch = t.sampler.ids_at(position + cfg.step_samples, cfg.step_samples)
            calls = iter(range(batches - 1))
            done = held.speculate(step + 1, share, batch, t.data.train.get, cfg.train.micro_batch_size, t.device,
                                  sharers=len(trainers), start=start, more=lambda c=calls: next(c, None) is not None)
            assert done == batches
            after = (ckpt.model_tensors(t.model), ckpt.optimizer_tensors(t.model, t.optimizer))
            for a, b in zip(rest, after, strict=True):
                assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
            assert t.sampler.position == position and t.step == step - 1  # nothing committed

    return voted


def state(trainers, syncs) -> list[torch.Tensor]:
    """Every member's model, inner moments and outer state."""
    out = []
    for t, s in zip(trainers, syncs, strict=True):
        out += [*t.model.parameters(), *ckpt.optimizer_tensors(t.model, t.optimizer).values(), *s.outer.tensors().values()]
    return out


@pytest.mark.parametrize("sync", [DILOCO, EAGER], ids=["diloco", "eager"])
def test_a_speculation_that_matches_is_kept_and_ends_in_the_same_bits(tmp_path, sync):
    plain_t, plain_s, _ = train(tmp_path / "plain", 2, *RUN, *sync)
    outcomes: list = []
    spec_t, spec_s, _ = train(tmp_path / "spec", 2, *RUN, *sync, voted=speculating(outcomes))
    assert outcomes[0] == [None, None]  # round 1: nothing was speculated
    for round_ in outcomes[1:]:
        assert [(o[0], o[2]) for o in round_] == [(2, True), (2, True)]  # both kept 2 inner batches
    a, b = state(plain_t, plain_s), state(spec_t, spec_s)
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert spec_t[0].sampler.position == plain_t[0].sampler.position and spec_t[0].step == 3


def test_a_speculation_from_another_start_is_redone_with_the_moments_restored(tmp_path):
    plain_t, plain_s, _ = train(tmp_path / "plain", 2, *RUN, *DILOCO)
    outcomes: list = []
    spec_t, spec_s, _ = train(tmp_path / "spec", 2, *RUN, *DILOCO, voted=speculating(outcomes, spoil=True))
    for round_ in outcomes[1:]:
        assert [(o[0], o[2]) for o in round_] == [(2, False), (2, False)]  # trained, then dropped
    a, b = state(plain_t, plain_s), state(spec_t, spec_s)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("moved, kept", [(lambda share: share[:-1], True), (lambda share: share[1:], False)],
                         ids=["shrunk-at-its-end", "moved-by-one"])
def test_a_speculation_on_a_resized_share_is_kept_only_when_its_first_inner_batches_are_the_rounds(
        tmp_path, moved, kept):
    """The leader resizes shares at their ends under speculation (``speed.stable_shares``): the
    inner batches are cut at the same places whatever the share's length, so a speculation on a
    share that shrank (or grew) at its end is kept; one on a share that moved is dropped."""
    outcomes: list = []

    def voted(step, trainers, syncs, locals_, pendings):
        outcomes.append(locals_[0].speculated)
        t, s, held, cfg = trainers[0], syncs[0], locals_[0], trainers[0].cfg
        if step == cfg.train.steps:
            return
        share = moved(even_shares(range(2), cfg.step_samples)[0])
        batch = t.sampler.ids_at(t.sampler.position + cfg.step_samples, cfg.step_samples)
        held.speculate(step + 1, share, batch, t.data.train.get, cfg.train.micro_batch_size, t.device, sharers=2,
                       start=s.start_after(t, held, pendings[0]), more=lambda: False)

    plain_t, plain_s, _ = train(tmp_path / "plain", 2, *RUN, *DILOCO)
    spec_t, spec_s, _ = train(tmp_path / "spec", 2, *RUN, *DILOCO, voted=voted)
    assert [(o[0], o[2]) for o in outcomes[1:]] == [(1, kept), (1, kept)]
    a, b = state(plain_t, plain_s), state(spec_t, spec_s)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
