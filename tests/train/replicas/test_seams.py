"""The seams the next issues plug into, each with its one implementation today: the sync strategy
(what a step reduces and what the reduced value does), vote checks (fields on the vote that the
leader judges before it commits), and a hook point per step phase."""

import json
import types

import pytest
import torch

from tenacia import hooks
from tenacia.faults import KILL_POINTS
from tenacia.train.replicas import votecheck
from tenacia.train.replicas.protocol import Verdict, Vote
from tenacia.train.replicas.replica import Replica
from tenacia.train.replicas.sync import STRATEGIES, EveryStep

from .test_coordinator_rules import Leader


class FakeWork:
    """A collective that has already summed in a peer's tensor."""

    def __init__(self, flat, peer):
        flat += peer
        self.future = torch.futures.Future()
        self.waited = False

    def get_future(self):
        return self.future

    def wait(self):
        self.waited = True


def test_every_step_sums_the_contributions_in_place_and_waits_on_the_future():
    peer = torch.tensor([10.0, 20.0, 30.0])
    flat = torch.tensor([1.0, 2.0, 3.0])
    works, woken, waited = [], [], []
    group = types.SimpleNamespace(allreduce=lambda tensors: works.append(FakeWork(tensors[0], peer)) or works[-1])

    def wait(done):
        works[0].future.set_result(None)  # the collective completes while the training thread sleeps
        waited.append(done())

    EveryStep().reduce(flat, group, wait, lambda *_: woken.append(True))
    assert flat.tolist() == [11.0, 22.0, 33.0] and waited == [True] and woken == [True] and works[0].waited
    assert set(STRATEGIES) == {"ddp", "diloco", "streaming"}


class ParityCheck:
    """A stand-in for a numeric check: members report a value, the leader refuses odd totals."""

    name = "parity"

    def measure(self, trainer, flat):
        return int(flat.sum().item())

    def judge(self, votes):
        total = sum(v.checks["parity"] for v in votes.values())
        return f"odd total {total}" if total % 2 else None


def test_a_vote_check_the_leader_judges_can_discard_a_step(tmp_path, monkeypatch):
    monkeypatch.setitem(votecheck.CHECKS, "parity", ParityCheck)
    lead = Leader(tmp_path, ledger=True, vote_checks=["parity"])
    try:
        lead.hello(0, 1, 2)
        check = votecheck.build(["parity"])[0]

        def vote_all(values):
            q = lead.coord.quorum
            for r, value in zip((0, 1, 2), values, strict=True):
                lead.coord.on_message(r, Vote(replica=r, quorum_id=q.quorum_id, step=q.step, ok=True, start=60,
                                              ids=(r,), batch=tuple(range(12)), tokens=64, loss=1.0,
                                              checks={"parity": check.measure(None, torch.tensor([float(value)]))}))

        vote_all((1, 1, 1))
        verdicts = [m for m in lead.conns[1].sent if isinstance(m, Verdict)]
        assert [v.commit for v in verdicts] == [False]
        assert lead.events("step_discarded")[-1]["reason"] == "vote check parity: odd total 3"
        assert not lead.ledger.path.exists() or not [json.loads(x) for x in lead.ledger.path.read_text().splitlines()
                                                     if json.loads(x)["kind"] == "step"]
        vote_all((1, 1, 2))  # the same step again, now acceptable
        assert [m.commit for m in lead.conns[1].sent if isinstance(m, Verdict)] == [False, True]
    finally:
        lead.coord.close()


def test_an_unknown_vote_check_is_refused_naming_the_known_ones(monkeypatch):
    monkeypatch.setitem(votecheck.CHECKS, "parity", ParityCheck)
    with pytest.raises(ValueError, match=r"unknown \['nan'\]; known: \['parity'\]"):
        votecheck.build(["nan"])


def test_every_phase_of_a_step_is_a_hook_point():
    reached = []
    stop = hooks.listen(lambda point, step: reached.append((point, step)))
    try:
        member = types.SimpleNamespace(phase="idle")
        for phase in ("compute", "allreduce", "vote", "idle"):
            Replica.enter(member, phase, 7)
            assert member.phase == phase
    finally:
        stop()
    assert reached == [("phase:compute", 7), ("phase:allreduce", 7), ("phase:vote", 7), ("phase:idle", 7)]
    assert {p for p, _ in reached} | {"phase:apply"} <= set(KILL_POINTS)
