"""A newcomer healed in a quorum's first step shares the batch from the quorum's second step on;
a new leader's takeover decision counts only the members in step with the old leader's last step."""

import json

from tenacia.data.ledger import SampleLedger
from tenacia.events import EventLog
from tenacia.train.config import ReplicaConfig
from tenacia.train.replicas.coordinator import Coordinator
from tenacia.train.replicas.protocol import Hello, Quorum, Resolve, Verdict, Vote
from tenacia.train.replicas.timing import Timing

from .fakes import FakeConn


def vote(replica: int, q: Quorum, ids: list[int]) -> Vote:
    return Vote(replica=replica, quorum_id=q.quorum_id, step=q.step, ok=True, start=0, ids=tuple(ids),
                batch=tuple(range(12)), tokens=16 * len(ids), loss=1.0)


def test_healed_newcomer_joins_the_sharers_after_the_heal_step_commits(tmp_path):
    coord = Coordinator(replica=0, term=1, host="127.0.0.1", cfg=ReplicaConfig(count=3), timing=Timing(),
                        total_steps=100,
                        events=EventLog(tmp_path / "events.jsonl", "coordinator:0"), ledger=None,
                        expected={0, 1, 2}, run_dir=tmp_path, batch_size=12)
    try:
        conns = {r: FakeConn() for r in range(3)}
        for r, committed in ((0, 5), (1, 5), (2, 0)):  # replica 2 is a restarted newcomer
            coord.on_hello(conns[r], Hello(replica=r, control=f"c{r}", heal=f"h{r}", committed=committed))
        q = next(m for m in conns[2].sent if isinstance(m, Quorum))
        assert (q.step, q.sharers, q.heal) == (6, (0, 1), {2: 0})
        for r, ids in ((0, list(range(6))), (1, list(range(6, 12))), (2, [])):
            coord.on_message(r, vote(r, q, ids))
        assert conns[2].sent[-1] == Verdict(quorum_id=q.quorum_id, step=6, commit=True)
        assert coord.quorum.quorum_id == q.quorum_id  # no new quorum, no new process group
        assert (coord.quorum.step, coord.quorum.sharers, coord.quorum.heal) == (7, (0, 1, 2), {})
    finally:
        coord.close()


def recorded(ledger: SampleLedger) -> list:
    """The ledger's entries in order: step numbers, and ("rewind", step) for rewinds."""
    lines = [json.loads(line) for line in ledger.path.read_text().splitlines()]
    return [e["step"] if e["kind"] == "step" else ("rewind", e["step"]) for e in lines]


def takeover_coordinator(tmp_path, members):
    """A new leader (replica 1) after a takeover; ``members``: replica -> (committed, pending)."""
    ledger = SampleLedger(tmp_path / "ledger.jsonl")
    for step in range(1, 71):
        ledger.record(step, 12 * (step - 1), list(range(12)))
    coord = Coordinator(replica=1, term=2, host="127.0.0.1", cfg=ReplicaConfig(count=3), timing=Timing(),
                        total_steps=100,
                        events=EventLog(tmp_path / "events.jsonl", "coordinator:1"), ledger=ledger,
                        expected=set(members), run_dir=tmp_path, batch_size=12, takeover_from=0.0)
    conns = {r: FakeConn() for r in members}
    for r, (committed, pending) in members.items():
        vote_ = Vote(replica=r, quorum_id=1, step=pending, ok=True, start=12 * (pending - 1),
                     batch=tuple(range(12))) if pending else None
        coord.on_hello(conns[r], Hello(replica=r, control=f"c{r}", heal=f"h{r}", committed=committed,
                                       pending=pending, pending_vote=vote_))
    return coord, conns, ledger


def test_takeover_ignores_a_newcomer_still_healing(tmp_path):
    """The old leader committed step 70 and died while newcomer 1 (resumed at step 40) healed: 1
    takes over; step 70 stays committed in the ledger (a newcomer's lag is not a missing vote)."""
    coord, conns, ledger = takeover_coordinator(tmp_path, {1: (40, None), 2: (70, None)})
    try:
        q = next(m for m in conns[2].sent if isinstance(m, Quorum))
        assert (q.step, q.sharers, q.heal, q.resolve) == (71, (2,), {1: 2}, None)
        assert recorded(ledger) == list(range(1, 71))
    finally:
        coord.close()


def test_takeover_commits_a_step_one_survivor_applied(tmp_path):
    """Survivor 2 applied step 70 (it had the commit verdict), survivor 3 still holds it pending:
    70 is committed for both, and the ledger keeps it once."""
    coord, conns, ledger = takeover_coordinator(tmp_path, {1: (40, None), 2: (70, None), 3: (69, 70)})
    try:
        q = next(m for m in conns[3].sent if isinstance(m, Quorum))
        assert q.resolve == Resolve(step=70, commit=True)
        assert (q.step, q.sharers) == (71, (2, 3))
        assert recorded(ledger) == list(range(1, 71))
    finally:
        coord.close()
