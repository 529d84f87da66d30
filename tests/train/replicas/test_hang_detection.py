"""The leader declares a silent member hung only while it still hears its own member; a member
whose own coordinator stopped does not wait for it forever; a member does not take unread
messages of its leader for silence; heartbeats go ten times per hang bound."""

import socket
import threading
import time
import types

import pytest

from tenacia.events import EventLog, read_events
from tenacia.train.config import ReplicaConfig
from tenacia.train.replicas.control_server import MemberStatus
from tenacia.train.replicas.coordinator import Coordinator
from tenacia.train.replicas.leadership import Leadership
from tenacia.train.replicas.member import LeaderLink
from tenacia.train.replicas.protocol import (
    Addrs,
    Expelled,
    Frozen,
    Heartbeat,
    Hello,
    LeaderHeartbeat,
    LeaderLost,
    Quorum,
    Resolve,
    Stop,
    Verdict,
    Welcome,
)
from tenacia.train.replicas.replica import Replica
from tenacia.train.replicas.step_exits import FinishLost, Rejoin
from tenacia.train.replicas.timing import Timing
from tenacia.train.replicas.wire import Conn

from .fakes import FakeClock, FakeConn


def test_silence_counts_only_while_the_leader_hears_its_own_member(tmp_path):
    cfg = ReplicaConfig(count=3, hang_floor_s=0.3)
    clock = FakeClock()
    coord = Coordinator(replica=0, term=1, host="127.0.0.1", cfg=cfg, timing=Timing.from_config(cfg),
                        total_steps=100, events=EventLog(tmp_path / "events.jsonl", "coordinator:0"),
                        ledger=None, expected={0, 1, 2}, run_dir=tmp_path, batch_size=12, clock=clock)
    try:
        conns = {r: FakeConn() for r in range(3)}
        for r in range(3):
            coord.on_hello(conns[r], Hello(replica=r, control=f"c{r}", heal=f"h{r}", committed=5))

        def run_for(seconds: float, *heard: int) -> None:
            """Tick every 20 ms (this process itself is not frozen), ``heard`` beating every 100 ms."""
            end = clock.t + seconds
            while clock.t < end and 1 in coord.members:
                clock.t += 0.02
                if round(clock.t * 50) % 5 == 0:
                    for r in heard:
                        coord.on_message(r, Heartbeat(replica=r, phase="compute", step=6, committed=5))
                coord.tick(clock.now())

        run_for(1.0)  # nobody heard, our own member included: a starved leader
        assert set(coord.members) == {0, 1, 2}
        run_for(0.6, 0, 2)  # our own member and replica 2 heard, replica 1 silent
        assert set(coord.members) == {0, 2}
        lost = [e for e in read_events(tmp_path / "events.jsonl") if e["event"] == "failure_detected"]
        assert [(e["replica"], e["kind"]) for e in lost] == [(1, "hang")]
        assert lost[0]["silence_s"] > 0.3  # declared after the bound, from its last heartbeat
        assert isinstance(conns[1].sent[-1], Expelled)
    finally:
        coord.close()


def beats(link: LeaderLink, clock: FakeClock, seconds: float) -> list:
    """Heartbeats every 100 ms for ``seconds``; what they put in the training thread's inbox."""
    for _ in range(round(seconds / 0.1)):
        clock.t += 0.1
        if not link.beat(clock.now()):
            break
    out = []
    while not link.inbox.empty():
        out.append(link.inbox.get_nowait())
    return out


def test_a_replica_whose_own_coordinator_stopped_rejoins_elsewhere():
    """Following its own coordinator, a member never fails over on silence; once that coordinator
    stopped (superseded, frozen) for a hang bound, the member is told to rejoin even if the
    coordinator's own ``expelled`` never reached it."""
    clock = FakeClock()
    server = types.SimpleNamespace(addr="127.0.0.1:1", coordinator=types.SimpleNamespace(stopped=False, finished=False))
    link = LeaderLink(0, server, "127.0.0.1:2", lambda: MemberStatus(step=1, phase="idle", committed=0),
                      None, None, Timing(), clock)
    link.leader = 0
    assert beats(link, clock, 1.5) == []  # a silent but running own coordinator: nothing
    server.coordinator.stopped = True
    assert beats(link, clock, 0.9) == []  # stopped for less than the bound (1 s before any quorum)
    msgs = beats(link, clock, 0.3)
    assert len(msgs) == 1 and isinstance(msgs[0], Expelled), msgs


def test_unread_leader_messages_are_not_silence():
    """A member starved of CPU can run its heartbeat thread before its reader thread: while the
    leader's messages wait unread in the socket, the leader is not declared lost; once they are
    taken and nothing more comes, it is."""
    clock = FakeClock()
    listener = socket.create_server(("127.0.0.1", 0))
    conn = Conn.connect(f"127.0.0.1:{listener.getsockname()[1]}", timeout=2.0)
    leader_side = Conn(listener.accept()[0])
    server = types.SimpleNamespace(addr="127.0.0.1:1", coordinator=None)
    link = LeaderLink(0, server, "127.0.0.1:2", lambda: MemberStatus(step=1, phase="idle", committed=0),
                      None, None, Timing(), clock)
    link.conn, link.leader = conn, 1  # no reader thread: as if it had not got the CPU yet
    leader_side.send(LeaderHeartbeat())
    link._last_rx = clock.now() - 5.0  # far beyond the 1 s bound before any quorum
    try:
        deadline = time.monotonic() + 5
        while not conn.has_unread() and time.monotonic() < deadline:  # the bytes cross loopback
            time.sleep(0.01)
        assert beats(link, clock, 1.0) == []  # the leader's heartbeat waits unread: not silence
        assert isinstance(conn.recv()[0], LeaderHeartbeat)  # the reader finally takes it
        msgs = beats(link, clock, 0.1)
        assert len(msgs) == 1 and isinstance(msgs[0], LeaderLost) and msgs[0].why.startswith("silent"), msgs
    finally:
        link.close(bye=False)
        leader_side.close()
        listener.close()


def test_a_newcomer_still_healing_is_not_elected_an_in_sync_survivor_is():
    """Leader 0 is lost while replica 1 (the lowest id left) still heals in the quorum's first
    step: replica 2, in sync, takes over; replica 1 asks 2 first."""
    q = Quorum(quorum_id=3, term=1, leader=0, step=9, members=(0, 1, 2), sharers=(0, 2), shares={}, heal={1: 0},
               store="s", addrs={r: Addrs(f"127.0.0.1:{9 + r}", "h") for r in (0, 1, 2)}, hang_timeout=0.5)
    led, asked = [], []

    def link_of(replica):
        server = types.SimpleNamespace(addr=f"127.0.0.1:{9 + replica}", coordinator=None, leader_addr=None,
                                       lost_leader=False)
        link = LeaderLink(replica, server, "h", lambda: MemberStatus(step=9, phase="idle", committed=8),
                          lambda **kw: led.append((replica, kw["term"])) or types.SimpleNamespace(stopped=False),
                          types.SimpleNamespace(emit=lambda *a, **k: None), Timing(), FakeClock())
        link.last_quorum, link.leader, link.term = q, 0, 1
        link._try = lambda addr, *a, **k: asked.append((replica, addr)) or addr == "127.0.0.1:11"
        link._try_for = lambda addr, seconds: link._try(addr)
        return link

    link_of(2)._failover(0.0, dead=True)
    assert led == [(2, 2)] and asked == [(2, "127.0.0.1:11")]  # it leads, and joins its own coordinator
    asked.clear()
    link_of(1)._failover(0.0, dead=True)
    assert asked == [(1, "127.0.0.1:11")] and led == [(2, 2)]  # it follows 2, leads nothing


def test_a_leaderless_election_goes_to_a_replica_holding_the_newest_state():
    """A fresh replacement (replica 0, at step 0) finds only leaderless peers: it leads only if no
    peer holds a newer step (real control servers on loopback)."""
    from tenacia.train.replicas.control_server import ControlServer

    def peer(committed):
        server = ControlServer(1, "127.0.0.1", "127.0.0.1")
        server.lost_leader = True  # it lost its leader too: it answers retry
        server.status = lambda: MemberStatus(step=committed + 1, phase="idle", committed=committed)
        return server

    def fresh_replica_leads(peer_server) -> bool:
        led = []
        own = ControlServer(0, "127.0.0.1", "127.0.0.1")
        link = LeaderLink(0, own, "h", lambda: MemberStatus(step=1, phase="idle", committed=0),
                          lambda **kw: led.append(kw) or (_ for _ in ()).throw(TimeoutError("stop here")),
                          types.SimpleNamespace(emit=lambda *a, **k: None), Timing(join_deadline_s=1.5))
        try:
            link.connect(lambda: [peer_server.addr])
        except TimeoutError:
            pass
        return bool(led)

    assert not fresh_replica_leads(peer(20))  # the peer holds step 20: it is the one to lead
    assert fresh_replica_leads(peer(0))  # same state: the lowest id leads


def quorum(hang_timeout: float) -> Quorum:
    return Quorum(quorum_id=1, term=1, leader=0, step=1, members=(0, 1), sharers=(0, 1), shares={0: (0,), 1: (1,)},
                  heal={}, store="s", addrs={r: Addrs(f"c{r}", f"h{r}") for r in (0, 1)}, hang_timeout=hang_timeout)


def test_a_member_takes_the_hang_bound_its_leader_measures_since_the_quorum_formed():
    """The quorum formed with the 0.5 s floor; the leader's heartbeats bring 7.5 s once steps of 5 s
    were measured: a 2 s pause of this process (a loaded host) or of its leader is no freeze, a
    pause past 7.5 s is."""
    clock = FakeClock()
    server = types.SimpleNamespace(addr="127.0.0.1:1", coordinator=None)
    link = LeaderLink(1, server, "127.0.0.1:2", lambda: MemberStatus(step=1, phase="idle", committed=0),
                      None, None, Timing(), clock)
    link.received(quorum(0.5))
    assert link.freeze_limit() == 0.5
    link.received(LeaderHeartbeat(hang_timeout=7.5))
    assert link.freeze_limit() == 7.5
    link.received(LeaderHeartbeat())  # an older leader's heartbeat, without a bound: keeps the last
    assert link.freeze_limit() == 7.5
    clock.t += 2.0
    assert not link.was_frozen()
    clock.t += 6.0
    assert link.was_frozen()


def test_a_replica_whose_own_coordinator_finished_the_job_is_not_sent_away():
    """The coordinator that sent the job's final stop has stopped; its own member, slow to read
    that stop on a loaded host, must find the stop: no ``expelled``, and heartbeats go on, so the
    training thread does not take their pause for a freeze either."""
    clock = FakeClock()
    server = types.SimpleNamespace(addr="127.0.0.1:1", coordinator=types.SimpleNamespace(stopped=True, finished=True))
    link = LeaderLink(0, server, "127.0.0.1:2", lambda: MemberStatus(step=1, phase="idle", committed=0),
                      None, None, Timing(), clock)
    link.leader = 0
    assert beats(link, clock, 5.0) == []  # far past the 1 s bound before any quorum
    assert not link.was_frozen()


def test_a_frozen_replica_with_the_final_stop_waiting_finishes_instead_of_rejoining():
    """A freeze is acted on before the inbox, except when the job's stop waits there: then the last
    verdict and the stop are read (the freeze notice skipped) and the replica finishes."""
    link = LeaderLink(0, types.SimpleNamespace(addr="127.0.0.1:1", coordinator=None), "127.0.0.1:2",
                      lambda: MemberStatus(step=1, phase="idle", committed=0), None, None, Timing(), FakeClock())
    replica = types.SimpleNamespace(link=link)
    link.frozen.set()
    verdict, stop = Verdict(quorum_id=1, step=10, commit=True), Stop(reason="finished", step=10)
    for msg in (verdict, Frozen(gap_s=2.0), stop):
        link.inbox.put(msg)
    assert Replica.poll(replica) == verdict
    assert Replica.poll(replica) == stop
    link.inbox.put(LeaderHeartbeat())
    with pytest.raises(Rejoin):  # no stop waiting: a frozen replica rejoins
        Replica.poll(replica)


def test_a_replica_started_after_the_job_finished_exits_without_training(tmp_path):
    """``finished.json`` exists when the replica starts (a restart after the finish): it exits 0
    before loading a checkpoint or joining anyone (it would train again from step 0)."""
    run_dir = tmp_path
    (run_dir / "finished.json").write_text("{}")
    leadership = types.SimpleNamespace(run_dir=run_dir)
    leadership.refuse_if_finished = lambda: Leadership.refuse_if_finished(leadership)
    replica = types.SimpleNamespace(id=0, leadership=leadership)  # no trainer, no link: never reached
    assert Replica.run(replica) == 0


def test_a_replica_whose_own_coordinator_ended_the_job_finishes_instead_of_rejoining():
    """Sent away after its coordinator's final stop (the stop lost with its link), the leader's
    replica does not look for peers that have exited: it applies the last step if still pending
    and finishes."""
    applied = []
    replica = types.SimpleNamespace(
        server=types.SimpleNamespace(coordinator=types.SimpleNamespace(finished=True, settled=(10, (0, 1)))),
        trainer=types.SimpleNamespace(step=9), cfg=types.SimpleNamespace(train=types.SimpleNamespace(steps=10)))
    replica.apply_resolve = lambda r: applied.append(r) or setattr(replica.trainer, "step", r.step)
    assert Replica.ended_here(replica) and applied == [Resolve(10, commit=True)]
    replica.apply_resolve = lambda r: None  # the last step is not held: exit non-zero, do not write
    replica.trainer.step = 9
    with pytest.raises(FinishLost):
        Replica.ended_here(replica)
    replica.server.coordinator.finished = False  # stopped otherwise (superseded, frozen): rejoin
    assert not Replica.ended_here(replica)


def test_heartbeats_go_ten_times_per_bound_and_often_again_under_a_new_leader():
    """A member beats every 100 ms until its leader tells a bound, then ten times per bound (a
    30 s bound: every 3 s); a new leader, whose own steps are not measured yet, gets them every
    100 ms again until it tells its bound."""
    clock = FakeClock()
    server = types.SimpleNamespace(addr="127.0.0.1:1", coordinator=None, term=0, leader_addr=None, lost_leader=False,
                                   device="")
    link = LeaderLink(1, server, "127.0.0.1:2", lambda: MemberStatus(step=1, phase="compute", committed=0),
                      None, None, Timing(), clock)
    link.conn, link.leader = FakeConn(), 0

    def sent(seconds: float) -> int:
        before = len(link.conn.sent)
        assert [m for m in beats(link, clock, seconds) if not isinstance(m, (LeaderHeartbeat, Quorum))] == []
        return len([m for m in link.conn.sent[before:] if isinstance(m, Heartbeat)])

    assert sent(0.5) == 5
    link.received(LeaderHeartbeat(hang_timeout=30.0))
    assert sent(9.0) == 3  # at 3 s, 6 s and 9 s after the last one
    listener = socket.create_server(("127.0.0.1", 0))

    held = []  # the new leader's end stays open: closed, the link's reader would report a lost leader

    def new_leader() -> None:
        conn = Conn(listener.accept()[0])
        held.append(conn)
        assert isinstance(conn.recv()[0], Hello)
        conn.send(Welcome(leader=2, term=2))

    greeter = threading.Thread(target=new_leader, daemon=True)
    greeter.start()
    try:
        assert link._try(f"127.0.0.1:{listener.getsockname()[1]}")
        greeter.join(5)
        link.conn = FakeConn()  # what the member sends its new leader, recorded
        assert sent(0.5) == 5
        link.received(quorum(30.0))
        assert sent(0.5) == 0
    finally:
        link.close(bye=False)
        for conn in held:
            conn.close()
        listener.close()


def test_the_leader_beats_ten_times_per_measured_bound(tmp_path):
    """The leader's heartbeats go every 100 ms at the 0.5 s floor, and every 0.75 s once steps of
    5 s make the bound 7.5 s."""
    from .test_coordinator_rules import Leader, commit_steps

    lead = Leader(tmp_path)
    try:
        lead.hello(0, 1, 2)

        def beats_in(seconds: float) -> int:
            before = len(lead.conns[1].sent)
            lead.run_for(seconds)
            return len([m for m in lead.conns[1].sent[before:] if isinstance(m, LeaderHeartbeat)])

        assert 8 <= beats_in(1.0) <= 10
        commit_steps(lead, 5, 5.0)
        assert lead.coord.hang_timeout == pytest.approx(7.5)
        assert 3 <= beats_in(3.0) <= 4
    finally:
        lead.coord.close()
