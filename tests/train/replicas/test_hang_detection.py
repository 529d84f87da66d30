"""The leader declares a silent member hung only while it still hears its own member; a member
whose own coordinator stopped does not wait for it forever; a member does not take unread
messages of its leader for silence."""

import queue
import socket
import time
import types

import pytest

from tenacia.events import EventLog, read_events
from tenacia.train.config import ReplicaConfig
from tenacia.train.replicas.coordinator import Coordinator
from tenacia.train.replicas.member import LeaderLink, MemberStatus
from tenacia.train.replicas.protocol import Expelled, Heartbeat, Hello, LeaderHeartbeat, LeaderLost
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


def test_a_replica_whose_own_coordinator_stopped_rejoins_elsewhere():
    """Following its own coordinator, a member never fails over on silence; once that coordinator
    stopped (superseded, frozen) for a hang bound, the member is told to rejoin even if the
    coordinator's own ``expelled`` never reached it."""
    server = types.SimpleNamespace(addr="127.0.0.1:1", coordinator=types.SimpleNamespace(stopped=False))
    link = LeaderLink(0, server, "127.0.0.1:2", lambda: MemberStatus(step=1, phase="idle", committed=0),
                      None, None, Timing())
    link.leader = 0
    link.start_heartbeats()
    try:
        with pytest.raises(queue.Empty):
            link.inbox.get(timeout=1.5)  # a silent but running own coordinator: nothing
        server.coordinator.stopped = True
        msg = link.inbox.get(timeout=3.0)  # freeze_limit is 1 s before any quorum
        assert isinstance(msg, Expelled), msg
    finally:
        link.close(bye=False)


def test_unread_leader_messages_are_not_silence():
    """A member starved of CPU can run its heartbeat thread before its reader thread: while the
    leader's messages wait unread in the socket, the leader is not declared lost; once they are
    taken and nothing more comes, it is."""
    listener = socket.create_server(("127.0.0.1", 0))
    conn = Conn.connect(f"127.0.0.1:{listener.getsockname()[1]}", timeout=2.0)
    leader_side = Conn(listener.accept()[0])
    server = types.SimpleNamespace(addr="127.0.0.1:1", coordinator=None)
    link = LeaderLink(0, server, "127.0.0.1:2", lambda: MemberStatus(step=1, phase="idle", committed=0),
                      None, None, Timing())
    link.conn, link.leader = conn, 1  # no reader thread: as if it had not got the CPU yet
    leader_side.send(LeaderHeartbeat())
    link._last_rx = time.monotonic() - 5.0  # far beyond the 1 s bound before any quorum
    link.start_heartbeats()
    try:
        with pytest.raises(queue.Empty):
            link.inbox.get(timeout=1.0)  # the leader's heartbeat waits unread: not silence
        assert isinstance(conn.recv()[0], LeaderHeartbeat)  # the reader finally takes it
        msg = link.inbox.get(timeout=3.0)
        assert isinstance(msg, LeaderLost) and msg.why.startswith("silent"), msg
    finally:
        link.close(bye=False)
        leader_side.close()
        listener.close()
