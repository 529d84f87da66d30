"""Evaluation in a replica run (``replicas/evals.py``): when it is due, what it records, and that it
only reads: a run that evaluates between its steps ends in the same bits as one that does not,
under ddp's single-process step and under streaming's outer rounds (the in-process members of
``outer_harness``; the multi-process run is ``tests/integration/test_replica_evals.py``)."""

import json

import torch

from tenacia import checkpoint as ckpt
from tenacia.events import read_events
from tenacia.train.replicas import evals
from tenacia.train.trainer import Trainer

from .outer_harness import load, train


def test_due_every_eval_every_steps_before_the_last_and_never_at_zero():
    assert [s for s in range(1, 13) if evals.due(s, 4, 12)] == [4, 8]  # 12 is the final eval's
    assert [s for s in range(1, 14) if evals.due(s, 5, 13)] == [5, 10]
    assert not any(evals.due(s, 0, 12) for s in range(1, 13))
    assert not any(evals.due(s, 20, 12) for s in range(1, 13))


def fingerprint(t: Trainer) -> str:
    return ckpt.state_fingerprint(t.step, t.sampler.state_dict(), t.model, t.optimizer)


def test_record_eval_writes_the_event_and_metrics_line_and_changes_no_training_state(tmp_path):
    plain = Trainer(load(tmp_path / "plain", "train.eval_batches=2"), write_ledger=False)
    evaluated = Trainer(load(tmp_path / "evaluated", "train.eval_batches=2"), write_ledger=False)
    for t in (plain, evaluated):
        t.step_once()
    before, rng = fingerprint(evaluated), torch.get_rng_state()
    loss = evals.record_eval(evaluated)
    assert fingerprint(evaluated) == before and torch.equal(torch.get_rng_state(), rng)
    assert evaluated.model.training
    events = [e for e in read_events(tmp_path / "evaluated" / "events.jsonl") if e["event"] == "eval"]
    assert [(e["step"], e["eval_loss"]) for e in events] == [(1, loss)]
    lines = [json.loads(x) for x in (tmp_path / "evaluated" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["eval_loss"]) for m in lines] == [(1, loss)] and loss > 0
    for t in (plain, evaluated):
        t.step_once()
    assert fingerprint(evaluated) == fingerprint(plain)


def test_evaluating_between_outer_rounds_leaves_every_members_state_as_without(tmp_path):
    run = ["replicas.sync=streaming", "replicas.outer.fragments=2", "replicas.outer.inner_steps=2",
           "train.steps=3", "train.eval_batches=2"]
    plain, plain_syncs, _ = train(tmp_path / "plain", 2, *run)
    seen: list[int] = []

    def evaluate_first(trainers: list[Trainer]) -> None:
        evals.record_eval(trainers[0])
        seen.append(trainers[0].step)

    evaluated, evaluated_syncs, _ = train(tmp_path / "evaluated", 2, *run, after_commit=evaluate_first)
    assert seen == [1, 2, 3]
    for a, b, sa, sb in zip(plain, evaluated, plain_syncs, evaluated_syncs, strict=True):
        assert fingerprint(a) == fingerprint(b)  # each member's local weights and inner moments
        outer_a, outer_b = (ckpt.tensors_fingerprint(t.step, {}, s.replicated(t)) for t, s in ((a, sa), (b, sb)))
        assert outer_a == outer_b  # the global parameters and outer momenta


def test_the_leaders_eval_seconds_go_into_its_next_votes_compute_seconds(tmp_path):
    from types import SimpleNamespace

    from tenacia.train.replicas.after_commit import AfterCommit

    t = Trainer(load(tmp_path, "train.eval_batches=2", "train.eval_every=1", "train.steps=5"), write_ledger=False)
    t.step_once()
    leader = SimpleNamespace(stopped=False)
    me = SimpleNamespace(trainer=t, cfg=t.cfg, server=SimpleNamespace(coordinator=leader), phase="idle",
                         evaluated_s=0.25)
    AfterCommit.after_commit(me)  # step 1 of 5, eval_every 1: due
    assert me.evaluated_s > 0.25 and me.phase == "idle"
    member = SimpleNamespace(**{**vars(me), "server": SimpleNamespace(coordinator=None), "evaluated_s": 0.0})
    AfterCommit.after_commit(member)  # not leading: no eval, nothing added
    assert member.evaluated_s == 0.0
