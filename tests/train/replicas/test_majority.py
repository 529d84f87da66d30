"""The majority rule, driven with a fake clock: a leader without an exclusive lease never forms a
quorum with a minority of the last quorum's members lost to silence (they may lead on the other
side of a partition); members proven dead do not count; a leader holding an exclusive (etcd)
lease may go on with any quorum, steps down when it hears none of its last quorum, and stops
committing the moment its lease stops being valid."""

import json
import threading

from tenacia.train.replicas.protocol import Expelled, Hello, Verdict, Vote, Wait

from .test_coordinator_rules import Leader


class FakeLease:
    """An exclusive lease whose validity the test sets."""

    exclusive = True

    def __init__(self, term: int = 1):
        self.term, self.newest, self.ok, self.gone = term, term, True, threading.Event()

    def valid(self) -> bool:
        return self.ok

    def release(self) -> None:
        self.gone.set()

    @property
    def released(self) -> bool:
        return self.gone.wait(5)  # released from a thread of the coordinator's

    def start(self, on_lost=None) -> None:
        pass


def vote_all(lead: Leader, members) -> None:
    q = lead.coord.quorum
    for r in members:
        lead.coord.on_message(r, Vote(replica=r, quorum_id=q.quorum_id, step=q.step, ok=True, start=60,
                                      ids=(r,), batch=tuple(range(12)), tokens=64, loss=1.0))


def test_a_cut_off_leader_never_forms_a_quorum_of_itself(tmp_path):
    lead = Leader(tmp_path, ledger=True)
    try:
        lead.hello(0, 1, 2)
        lead.mute |= {1, 2}  # a partition: both alive on the other side, silent here
        lead.run_for(1.0)
        assert {e["replica"] for e in lead.events("failure_detected")} == {1, 2}
        # losing 1 left 2 of 3 (a majority); losing 2 too left 1 of the last committed quorum's 3
        assert lead.coord.quorum is None and [q.members for q in lead.quorums(0)] == [(0, 1, 2), (0, 2)]
        refused = lead.events("quorum_refused")
        assert len(refused) == 1 and "only [0] of the last quorum's [0, 1, 2]" in refused[0]["reason"]
        assert [m for m in lead.conns[0].sent if isinstance(m, Wait)][-1].reason == refused[0]["reason"]
        lead.mute.clear()
        lead.hello(1)  # the link is back: 2 of 3 is a majority
        lead.run_for(0.1)
        assert lead.quorums(0)[-1].members == (0, 1)
    finally:
        lead.coord.close()


def test_members_that_crashed_do_not_count_against_the_majority(tmp_path):
    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)
        for r in (1, 2):
            lead.coord.on_disconnect(r, lead.conns[r])  # their connections closed: dead
        assert lead.quorums(0)[-1].members == (0,) and lead.events("quorum_refused") == []
    finally:
        lead.coord.close()


def test_half_goes_on_only_with_the_lowest_id(tmp_path):
    lead = Leader(tmp_path, members=(0, 1, 2, 3))
    try:
        lead.hello(0, 1, 2, 3)
        lead.mute |= {2, 3}
        lead.run_for(1.0)
        assert lead.quorums(0)[-1].members == (0, 1)  # half, holding 0: the other half cannot go on
    finally:
        lead.coord.close()
    other = Leader(tmp_path / "b", members=(0, 1, 2, 3))
    try:
        other.hello(0, 1, 2, 3)
        other.mute |= {2, 3}
        other.coord.settled = (9, (2, 3, 4, 5))  # as a member's hello reported: a newer committed quorum
        other.run_for(1.0)
        assert other.coord.quorum is None and other.events("quorum_refused")  # half, without its lowest id
    finally:
        other.coord.close()


def test_an_exclusive_lease_lets_a_minority_go_on_and_a_lone_leader_step_down(tmp_path):
    lease = FakeLease()
    lead = Leader(tmp_path, members=(0, 1, 2, 3), lease=lease)
    try:
        lead.hello(0, 1, 2, 3)
        lead.mute |= {2, 3}
        lead.run_for(1.0)
        assert lead.quorums(0)[-1].members == (0, 1)
        lead.mute.add(1)
        lead.run_for(1.0)  # it hears none of its last quorum: whoever it cannot hear may elect another
        assert lead.coord.stopped and lease.released
        assert lead.events("coordinator_alone")[0]["last_quorum"] == [0, 1, 2, 3]  # no step committed since
        assert isinstance(lead.conns[0].sent[-1], Expelled)
    finally:
        lead.coord.close()


def test_a_leader_stops_committing_the_moment_its_lease_is_not_valid(tmp_path):
    lease = FakeLease(term=3)
    lead = Leader(tmp_path, ledger=True, lease=lease)
    try:
        lead.hello(0, 1, 2)
        vote_all(lead, (0, 1, 2))
        assert any(isinstance(m, Verdict) and m.commit for m in lead.conns[1].sent)
        lease.ok = False  # etcd unreachable for one TTL (or the record gone): a local comparison
        vote_all(lead, (0, 1, 2))
        assert lead.coord.stopped, "alive, and refused"
        lines = [json.loads(x) for x in lead.ledger.path.read_text().splitlines()]
        assert [e["step"] for e in lines if e["kind"] == "step"] == [6]
        assert lead.events("coordinator_superseded")[0]["term"] == 3
        assert isinstance(lead.conns[2].sent[-1], Expelled) and lease.released
    finally:
        lead.coord.close()


def test_the_base_is_the_newest_committed_quorum_any_member_reports(tmp_path):
    """A member that missed the commits of a smaller quorum must not let a stale, larger view
    make a majority: the newest base reported in a hello wins."""
    lead = Leader(tmp_path, members=(1, 2))
    try:
        lead.coord.on_hello(lead_conn(lead, 1), Hello(replica=1, control="c1", heal="h1", committed=5,
                                                      settled=(0, 1, 2), settled_step=5))
        lead.coord.on_hello(lead_conn(lead, 2), Hello(replica=2, control="c2", heal="h2", committed=7,
                                                      settled=(0, 2), settled_step=7))
        lead.run_for(1.5)  # past the join grace: {1, 2} is 2 of 3 in the stale view, 1 of 2 in the newest
        assert lead.coord.quorum is None and lead.coord.settled == (7, (0, 2))
        assert "of the last quorum's [0, 2]" in lead.events("quorum_refused")[0]["reason"]
    finally:
        lead.coord.close()


def lead_conn(lead: Leader, r: int):
    from .fakes import FakeConn
    lead.conns[r], lead.phase[r] = FakeConn(), "idle"
    return lead.conns[r]


def test_a_quorum_never_starts_below_the_step_a_replica_that_just_left_holds(tmp_path):
    """Replica 1 holds step 20; it rejoins (its old connection closes) while two fresh replacements
    at step 0 are live: no quorum at step 1 meanwhile. Back, it heals the others."""
    lead = Leader(tmp_path, ledger=True, members=(0, 1, 2))
    try:
        lead.hello(0, committed=0)
        lead.hello(1, committed=20)
        lead.hello(2, committed=0)
        assert lead.quorums(0)[-1].step == 21
        lead.coord.on_disconnect(1, lead.conns[1])
        assert lead.coord.quorum is None and "hold step 20" in lead.events("quorum_refused")[-1]["reason"]
        lead.run_for(1.0)
        assert lead.coord.quorum is None
        lead.hello(1, committed=20)
        q = lead.quorums(0)[-1]
        assert (q.step, q.heal) == (21, {0: 1, 2: 1})
        assert [e["step"] for e in lead.events("resumed")] == [20]  # the first quorum only: no rewind
    finally:
        lead.coord.close()


def test_once_every_holder_is_gone_for_good_the_run_goes_on_from_the_live_step(tmp_path):
    lead = Leader(tmp_path, ledger=True, members=(0, 1, 2))
    try:
        lead.hello(0, committed=0)
        lead.hello(1, committed=20)
        lead.hello(2, committed=0)
        lead.coord.on_disconnect(1, lead.conns[1])
        lead.run_for(lead.coord.timing.stuck_bound(lead.coord.hang_timeout) + 0.5)
        q = lead.quorums(0)[-1]  # the stand-in members' heartbeats say they hold step 5
        assert (q.step, q.members) == (6, (0, 2))
        resumed = lead.events("resumed")[-1]
        assert resumed["step"] == 5 and "no live replica holds step 20" in resumed["reason"]
        lines = [json.loads(x) for x in lead.ledger.path.read_text().splitlines()]
        assert lines[-1] == {"kind": "rewind", "step": 5, "term": 1}
    finally:
        lead.coord.close()


def test_a_commit_every_member_missed_is_redone_after_a_rewind(tmp_path):
    """The leader recorded step 6 and sent the commit; every member rejoins holding step 5 (none
    applied it: the commit was lost, as under an old speculation that read past its verdict). The
    quorum redoes step 6, and the ledger rewinds to 5 before it records step 6 again: never two
    records of one step in one term. A commit that only some members missed is healed, not redone."""
    from .test_sharers import recorded, vote

    for missed, redo in (((0, 1, 2), True), ((1, 2), False)):
        lead = Leader(tmp_path / f"missed{len(missed)}", ledger=True, members=(0, 1, 2))
        try:
            lead.hello(0, 1, 2, committed=5)
            q = lead.quorums(0)[-1]
            for r in q.sharers:
                lead.coord.on_message(r, vote(r, q, list(range(4 * r, 4 * r + 4))))
            assert isinstance(lead.conns[0].sent[-1], Verdict) and lead.conns[0].sent[-1].commit
            for r in missed:
                lead.coord.on_disconnect(r, lead.conns[r])
            for r in missed:
                lead.hello(r, committed=5)
            again = lead.quorums(0)[-1]
            assert again.step == (6 if redo else 7), again
            if redo:
                for r in again.sharers:
                    lead.coord.on_message(r, vote(r, again, list(range(4 * r, 4 * r + 4))))
                assert recorded(lead.ledger) == [("rewind", 5), 6, ("rewind", 5), 6]
                assert "no live replica holds step 6" in lead.events("resumed")[-1]["reason"]
            else:
                assert recorded(lead.ledger) == [("rewind", 5), 6]
        finally:
            lead.coord.close()
