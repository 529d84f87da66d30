"""A replica's control server, and the status of its training thread that the server reports.

Every replica listens on a control address. While it leads, hellos it receives go to its
``Coordinator``, and the connection then carries that member's messages to it; otherwise the
server answers ``redirect`` with the leader it knows, or ``retry`` (with this replica's term and
committed step, for a leaderless election: ``member.LeaderLink.connect``) when it has itself lost
the leader and is about to decide who leads next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .coordinator import Coordinator
from .protocol import Hello, Redirect, Retry, Vote
from .wire import Conn, listen, serve_forever, sock_addr


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """What the training thread is doing, as its hellos and heartbeats report it: in ``phase`` of
    ``step``, with ``committed`` applied and ``pending`` (with its vote) awaiting a verdict."""

    step: int
    phase: str
    committed: int
    pending: int | None = None
    pending_vote: Vote | None = None


class ControlServer:
    """Accepts control connections; hands them to the coordinator while this replica leads."""

    def __init__(self, replica: int, host: str, advertise: str):
        self.replica, self.term = replica, 0
        self.sock = listen(host)
        self.addr = sock_addr(self.sock, advertise)
        self.coordinator: Coordinator | None = None
        self.device = ""  # host:slot this replica computes on (numeric_member.device_name)
        self.status: Callable[[], MemberStatus] | None = None  # the training thread's, set by the replica
        self.leader_addr: str | None = None
        self.lost_leader = False
        serve_forever(self.sock, self._serve, "control-accept")

    def _serve(self, conn: Conn) -> None:
        try:
            msg, _ = conn.recv()
        except ConnectionError:
            return
        coord = self.coordinator
        if not isinstance(msg, Hello):
            conn.close()
            return
        if coord is None or coord.stopped:
            if self.lost_leader or self.leader_addr is None:
                committed = self.status().committed if self.status is not None else 0
                conn.try_send(Retry(replica=self.replica, term=self.term, committed=committed))
            else:
                conn.try_send(Redirect(self.leader_addr))
            conn.close()
            return
        rid = msg.replica
        coord.on_hello(conn, msg)
        try:
            while True:
                msg, _ = conn.recv()
                coord.on_message(rid, msg)
        except ConnectionError:
            coord.on_disconnect(rid, conn)
