"""The leader's rules, driven with a fake clock (no sleeps): min_replicas waits, max_replicas caps,
a stuck step and a stuck collective, a frozen leader, and the fence that makes a stale leader step
down and refuses its commit."""

import json

import pytest

from tenacia.data.ledger import SampleLedger
from tenacia.events import EventLog, read_events
from tenacia.train.config import ReplicaConfig
from tenacia.train.replicas.coordinator import Coordinator
from tenacia.train.replicas.lease import claim_term
from tenacia.train.replicas.protocol import (
    Expelled,
    Heartbeat,
    Hello,
    LeaderHeartbeat,
    Quorum,
    Resolve,
    Stop,
    Verdict,
    Vote,
    Wait,
)
from tenacia.train.replicas.timing import Timing

from .fakes import FakeClock, FakeConn


class Leader:
    """A coordinator (replica 0) with stand-in members, moved by a fake clock."""

    def __init__(self, tmp_path, members=(0, 1, 2), ledger=False, lease=None, **cfg):
        self.cfg = ReplicaConfig(**{"count": len(members), "join_grace_s": 1.0, **cfg})
        self.clock, self.path = FakeClock(), tmp_path / "events.jsonl"
        self.ledger = SampleLedger(tmp_path / "ledger.jsonl") if ledger else None
        self.coord = Coordinator(replica=0, term=1, host="127.0.0.1", cfg=self.cfg,
                                 timing=Timing.from_config(self.cfg), total_steps=100,
                                 events=EventLog(self.path, "coordinator:0"), ledger=self.ledger,
                                 expected=set(members), run_dir=tmp_path, batch_size=12, clock=self.clock, lease=lease)
        self.conns: dict[int, FakeConn] = {}
        self.phase: dict[int, str] = {}
        self.mute: set[int] = set()  # members that stop beating (SIGSTOP)

    def hello(self, *replicas: int, committed: int = 5) -> None:
        for r in replicas:
            self.conns[r] = FakeConn()
            self.phase[r] = "idle"
            self.coord.on_hello(self.conns[r], Hello(replica=r, control=f"c{r}", heal=f"h{r}", committed=committed))

    def run_for(self, seconds: float) -> None:
        """Tick every 20 ms; every member still connected beats every 100 ms in its phase."""
        end = self.clock.t + seconds
        n = 0
        while self.clock.t < end - 1e-9:
            self.clock.t += 0.02
            n += 1
            if n % 5 == 0:
                step = self.coord.quorum.step if self.coord.quorum else 6
                for r in set(self.coord.members) - self.mute:
                    self.coord.on_message(r, Heartbeat(replica=r, step=step, phase=self.phase[r], committed=5))
            self.coord.tick(self.clock.now())

    def events(self, name: str) -> list[dict]:
        return [e for e in read_events(self.path) if e["event"] == name]

    def quorums(self, r: int) -> list[Quorum]:
        return [m for m in self.conns[r].sent if isinstance(m, Quorum)]


def test_min_replicas_waits_for_enough_members(tmp_path):
    lead = Leader(tmp_path, min_replicas=2)
    try:
        lead.hello(0)
        lead.run_for(3.0)  # the join grace is over, and one member is fewer than min_replicas
        assert lead.coord.quorum is None and lead.quorums(0) == []
        lead.hello(1)
        lead.run_for(0.1)
        assert [q.members for q in lead.quorums(0)] == [(0, 1)]
        lead.coord.on_disconnect(1, lead.conns[1])  # back under min_replicas: the members wait
        assert lead.coord.quorum is None and isinstance(lead.conns[0].sent[-1], Wait)
        assert "min_replicas 2" in lead.conns[0].sent[-1].reason
    finally:
        lead.coord.close()


def test_max_replicas_caps_the_quorum_and_the_rest_wait_outside(tmp_path):
    lead = Leader(tmp_path, members=(0, 1), max_replicas=2)
    try:
        lead.hello(0, 1, 2)  # replica 2 comes from another host's launcher
        q = lead.quorums(0)[-1]
        assert q.members == (0, 1) and 2 not in q.addrs
        assert lead.quorums(2) == [] and 2 in lead.coord.members  # a member, not in the quorum
    finally:
        lead.coord.close()


def test_a_member_stuck_in_its_step_is_expelled_after_the_stuck_bound(tmp_path):
    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)
        lead.phase.update({0: "allreduce", 1: "compute", 2: "allreduce"})
        lead.run_for(9.5)  # heartbeating, and under max(10 s, 4 x hang bound): a straggler
        assert set(lead.coord.members) == {0, 1, 2}
        lead.run_for(1.0)
        assert set(lead.coord.members) == {0, 2}
        lost = lead.events("failure_detected")
        assert [(e["replica"], e["kind"]) for e in lost] == [(1, "hang")] and "stuck in its step" in lost[0]["reason"]
        assert isinstance(lead.conns[1].sent[-1], Expelled)
        assert lead.quorums(0)[-1].members == (0, 2)
    finally:
        lead.coord.close()


def test_a_stuck_collective_discards_the_step_and_forms_a_new_quorum(tmp_path):
    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)
        first = lead.quorums(0)[-1]
        lead.phase.update({0: "allreduce", 1: "allreduce", 2: "allreduce"})
        lead.run_for(0.4)  # under the hang bound (0.5 s before steps are measured)
        assert lead.quorums(0)[-1] == first
        lead.run_for(0.3)
        again = lead.quorums(0)[-1]
        assert again.quorum_id == first.quorum_id + 1 and again.members == (0, 1, 2)
        assert again.step == first.step and again.resolve == Resolve(step=first.step, commit=False)
        assert "all-reduce stuck" in lead.events("step_discarded")[0]["reason"]
        assert set(lead.coord.members) == {0, 1, 2}  # nobody is blamed for it
    finally:
        lead.coord.close()


def test_a_frozen_leader_stops_at_its_next_tick(tmp_path):
    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)
        lead.run_for(0.2)
        lead.clock.t += 2.0  # SIGSTOP: no tick for longer than the hang bound
        lead.coord.tick(lead.clock.now())
        assert lead.coord.stopped
        assert [e["gap_s"] for e in lead.events("coordinator_frozen")] == [2.0]
        assert lead.events("failure_detected") == []  # its members are not blamed for its freeze
    finally:
        lead.coord.close()


def test_the_fence_makes_a_stale_leader_step_down_and_refuses_its_commit(tmp_path):
    lead = Leader(tmp_path, ledger=True)
    try:
        lead.hello(0, 1, 2)
        q = lead.quorums(0)[-1]
        claim_term(tmp_path, replica=1, control="c1", at_least=2)  # another leader was elected meanwhile
        for r, ids in ((0, range(4)), (1, range(4, 8)), (2, range(8, 12))):
            lead.coord.on_message(r, Vote(replica=r, quorum_id=q.quorum_id, step=q.step, ok=True, start=60,
                                          ids=tuple(ids), batch=tuple(range(12)), tokens=64, loss=1.0))
        assert lead.coord.stopped  # alive, and refused: no verdict, nothing recorded
        assert not any(isinstance(m, Verdict) for c in lead.conns.values() for m in c.sent)
        lines = [json.loads(x) for x in lead.ledger.path.read_text().splitlines()] if lead.ledger.path.exists() else []
        assert [e for e in lines if e["kind"] == "step"] == []
        assert all(isinstance(c.sent[-1], Expelled) for c in lead.conns.values())
        assert lead.events("coordinator_superseded")[0]["newest_term"] == 2
    finally:
        lead.coord.close()


def test_the_fence_is_checked_between_commits_too(tmp_path):
    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)
        lead.run_for(0.3)
        assert not lead.coord.stopped
        claim_term(tmp_path, replica=1, control="c1", at_least=2)
        lead.run_for(0.6)  # at most one fence period later
        assert lead.coord.stopped and lead.events("coordinator_superseded")
    finally:
        lead.coord.close()


def test_the_hang_bound_follows_the_measured_step_times(tmp_path):
    """Steps of 1 s make the bound 1.5 s (hang_factor x median): a member silent for 1.2 s is a
    slow one, silent for longer than 1.5 s a hung one."""
    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)
        for _ in range(5):
            q = lead.coord.quorum
            lead.run_for(1.0)
            for r in (0, 1, 2):
                lead.coord.on_message(r, Vote(replica=r, quorum_id=q.quorum_id, step=q.step, ok=True, start=0,
                                              ids=tuple(range(4 * r, 4 * r + 4)), batch=tuple(range(12))))
        assert [e["step_time_s"] for e in lead.events("step_committed")][1:] == [1.0] * 4
        assert lead.coord.hang_timeout == pytest.approx(1.5)
        lead.mute.add(1)
        lead.run_for(1.4)  # silent for 1.4 s: over the 0.5 s floor, under the measured bound
        assert lead.events("failure_detected") == []
        lead.run_for(0.3)
        lost = lead.events("failure_detected")
        assert [(e["replica"], e["kind"]) for e in lost] == [(1, "hang")] and "> 1.50s" in lost[0]["reason"]
        assert 1.5 < lost[0]["silence_s"] <= 1.6
    finally:
        lead.coord.close()


def test_the_stuck_bound_follows_a_slow_members_own_compute_times(tmp_path):
    """A replica whose compute phases take 8 s (a slow chip, or a diloco round of many inner steps)
    is stuck only after 4 x 1.5 x 8 = 48 s of computing while its peers wait, not after the
    quorum's 10 s."""
    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)
        lead.phase.update({0: "allreduce", 2: "allreduce"})
        for _ in range(3):
            lead.phase[1] = "compute"
            lead.run_for(8.0)
            lead.phase[1] = "vote"
            lead.run_for(0.2)
        assert list(lead.coord.members[1].compute_times) == pytest.approx([8.0] * 3, abs=0.11)
        lead.phase[1] = "compute"
        lead.run_for(40.0)  # four times the quorum's stuck bound: a straggler still
        assert set(lead.coord.members) == {0, 1, 2} and lead.events("failure_detected") == []
        lead.run_for(9.0)
        lost = lead.events("failure_detected")
        assert [(e["replica"], e["kind"]) for e in lost] == [(1, "hang")] and "> 48." in lost[0]["reason"]
    finally:
        lead.coord.close()


def commit_steps(lead: Leader, n: int, step_s: float) -> None:
    """``n`` steps of the current quorum, each voted ok by all after ``step_s`` seconds."""
    for _ in range(n):
        q = lead.coord.quorum
        lead.run_for(step_s)
        for r in q.members:
            lead.coord.on_message(r, Vote(replica=r, quorum_id=q.quorum_id, step=q.step, ok=True, start=0,
                                          ids=tuple(range(4 * r, 4 * r + 4)), batch=tuple(range(12))))


def test_members_are_told_the_hang_bound_as_steps_are_measured_not_only_at_formation(tmp_path):
    """A quorum that never changes formed before any step was measured (the 0.5 s floor); the
    leader's heartbeats carry the bound its step times give since (1.5 x 5 s), so its members do
    not take a 2 s pause of their leader for a freeze."""
    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)
        commit_steps(lead, 5, 5.0)
        lead.run_for(0.2)
        assert len(lead.quorums(1)) == 1 and lead.quorums(1)[0].hang_timeout == 0.5  # formed before any step
        beats = [m.hang_timeout for m in lead.conns[1].sent if isinstance(m, LeaderHeartbeat)]
        assert beats[0] == 0.5 and beats[-1] == pytest.approx(7.5)  # follows the measured steps
        assert min(beats) == 0.5  # never under the floor
    finally:
        lead.coord.close()


def test_the_coordinator_that_ends_the_job_says_so(tmp_path):
    """The final stop marks the coordinator finished: its own member must not take it for a
    stopped leader (member.py)."""
    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)
        lead.coord.total_steps = 8
        commit_steps(lead, 3, 1.0)
        assert lead.coord.stopped and lead.coord.finished
        assert all(isinstance(lead.conns[r].sent[-1], Stop) for r in (0, 1, 2))
    finally:
        lead.coord.close()


def test_a_coordinator_left_waiting_after_the_job_finished_steps_down(tmp_path):
    """Waiting for members that exited with the finished job would last forever: once
    ``finished.json`` exists, a waiting coordinator stops and sends its members away (they find
    the job over and exit)."""
    lead = Leader(tmp_path, members=(0, 1), min_replicas=2)
    try:
        lead.hello(0)
        lead.run_for(3.0)  # alone, below min_replicas: waiting
        assert lead.coord.quorum is None and not lead.coord.stopped
        (tmp_path / "finished.json").write_text("{}")
        lead.run_for(lead.coord.timing.fence_check_s + 0.1)
        assert lead.coord.stopped and not lead.coord.finished
        assert isinstance(lead.conns[0].sent[-1], Expelled) and "finished" in lead.conns[0].sent[-1].reason
    finally:
        lead.coord.close()
