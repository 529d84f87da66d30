"""A replica's side of coordination: its link to the leader, heartbeats, and failover (its
control server, which answers other replicas' hellos: ``control_server.py``).

Failover contract: a member that loses the leader (connection closed: a crash, seen at once; or no
message for longer than the leader's hang bound: a freeze) picks the lowest replica id of
the last quorum other than the lost leader, in-sync members before newcomers still healing. If
that is itself, it starts a ``Coordinator`` (a new term) and waits for the survivors; otherwise it connects there, skipping candidates that refuse
connections. A candidate that has not noticed the loss yet redirects to the lost leader: that
redirect is not followed before one hang bound has passed since the loss was noticed (the
candidate is asked again every 30 ms meanwhile), and then at most once per failover, with a
timeout of at most the hang bound. A replica following its own coordinator never fails over on
silence; once that coordinator has stopped (superseded, frozen) for a hang bound, the replica
rejoins as a newcomer even if the coordinator's ``expelled`` never reached it. A member that
finds it was frozen itself (its heartbeat clock jumped past the hang timeout) assumes it was
expelled, steps down if it led, and rejoins as a newcomer that heals.

The hang bound a member acts on follows the step times as they are measured: a quorum carries the
leader's bound at formation (the floor, for a job's first quorum), every ``LeaderHeartbeat`` the
leader's bound now (``Timing.hang_bound`` of its step times), so a quorum that never changes does
not keep the floor it formed with. Heartbeats each way go ten times per bound (``timing.py``;
every ``heartbeat_s`` until the current leader has told its bound). The end of a job is final:
once this replica's own coordinator sent the job's ``stop``, it is never taken for a stopped leader to leave, and a ``stop`` waiting
in the inbox is read before a freeze is acted on (the training thread finishes instead of
rejoining peers that have exited).

Leases (``lease.py``): a candidate claims its term from the lease store. With an exclusive store
(etcd) the claim is refused while the lost leader's lease is valid; the candidate asks again
every ``Timing.retry_s`` for up to one lease TTL, and follows whoever claimed meanwhile. A member
that lost its leader because the connection closed (the process died) tells the store, which
revokes that leader's lease at once: a crash costs no TTL, a silence costs up to one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .control_server import ControlServer, MemberStatus
from .coordinator import Coordinator
from .lease import LeaseHeld, StoreUnreachable
from .protocol import (
    Bye,
    Expelled,
    Frozen,
    Heartbeat,
    Hello,
    LeaderHeartbeat,
    LeaderLost,
    Message,
    Notice,
    Quorum,
    Redirect,
    Retry,
    Stop,
    Verdict,
    Welcome,
)
from .timing import Clock, Timing
from .wire import Conn


class LeaderLink:
    """The member's connection to the current leader, with heartbeats and failover."""

    def __init__(self, replica: int, server: ControlServer, heal_addr: str, status: Callable[[], MemberStatus],
                 make_coordinator: Callable[..., Coordinator], events: Any, timing: Timing,
                 clock: Clock | None = None):
        self.replica, self.server, self.heal_addr = replica, server, heal_addr
        self.status = status  # committed step, pending step, phase, ... of the training thread
        self.make_coordinator = make_coordinator
        self.events = events
        self.timing, self.clock = timing, clock or Clock()
        self.inbox: queue.Queue[Message | Notice] = queue.Queue()
        self.conn: Conn | None = None
        self.leader: int | None = None
        self._quorum_lock = threading.Lock()
        self.last_quorum: Quorum | None = None  # the newest quorum received, at the step its members run
        self.hang_timeout: float | None = None  # the leader's newest hang bound (a quorum's, a heartbeat's)
        self.leader_bound: float | None = None  # the bound the current leader told: heartbeats' period
        self._sent = float("-inf")  # when this member's last heartbeat went
        self.settled: tuple[int, tuple[int, ...]] = (0, ())  # (step, members) of the newest commit seen
        self.term = 0
        self._last_rx = self._tick = self.clock.now()
        self._stop = False
        self._lost: tuple[str, float] | None = None  # (lost leader's address, ask it not before)
        self._own_stopped_since: float | None = None
        self.frozen = threading.Event()  # set when we find we were frozen: rejoin as newcomer

    # ----- connecting -----------------------------------------------------------------------------
    def hello(self) -> Hello:
        s = self.status()
        return Hello(replica=self.replica, control=self.server.addr, heal=self.heal_addr, committed=s.committed,
                     pending=s.pending, pending_vote=s.pending_vote,
                     quorum_seen=self.last_quorum.quorum_id if self.last_quorum else 0,
                     settled=self.settled[1], settled_step=self.settled[0], device=self.server.device)

    def advance(self, q: Quorum) -> None:
        """The training thread moved quorum ``q`` on a step: remember it at that step (a takeover
        salvages from it), unless a newer quorum arrived meanwhile."""
        with self._quorum_lock:
            if self.last_quorum is None or self.last_quorum.quorum_id == q.quorum_id:
                self.last_quorum = q

    def connect(self, seeds: Callable[[], list[str]]) -> None:
        """Join through any seed address (following redirects). If every reachable seed is itself
        leaderless for ``Timing.elect_after_s`` and this replica has the lowest id among them, lead."""
        t0 = self.clock.now()
        leaderless_since: float | None = None
        deadline_s, elect_after_s = self.timing.join_deadline_s, self.timing.elect_after_s
        while self.clock.now() - t0 < deadline_s:
            self._retries: dict[int, Retry] = {}  # the answers of leaderless peers (their term, their step)
            self._silent = 0  # seeds that neither answered nor refused: alive maybe, so no election
            if any(self._try(addr) for addr in seeds()):
                return
            now = self.clock.now()
            mine = self.status().committed
            # a leaderless election goes to the lowest id among the replicas holding the newest
            # state: a fresh replacement never leads (and rewinds the ledger) beside peers ahead of it
            if (not self._silent and all(a.committed <= mine for a in self._retries.values())
                    and all(r > self.replica for r, a in self._retries.items() if a.committed == mine)):
                leaderless_since = leaderless_since or now
                if now - leaderless_since >= elect_after_s:
                    term = max([self.term, *(a.term for a in self._retries.values())]) + 1
                    try:
                        self.server.coordinator = self.make_coordinator(term=term,
                                                                        expected={self.replica, *self._retries})
                    except LeaseHeld as held:  # a leader holds the lease: ask it next round
                        self._try(held.control)
                    except StoreUnreachable:
                        pass  # no term without the store: ask the peers again
                    else:
                        if self._try(self.server.addr):
                            return
            else:
                leaderless_since = None
            self.clock.sleep(self.timing.retry_s)
        raise TimeoutError(f"replica {self.replica}: no leader reachable through {seeds()} in {deadline_s:.0f}s")

    def _try(self, addr: str, hops: int = 4, timeout: float | None = None) -> bool:
        try:
            conn = Conn.connect(addr, timeout=timeout or self.timing.connect_s)
        except ConnectionRefusedError:
            return False  # nobody listens there: that replica is gone
        except OSError:
            self._silent = getattr(self, "_silent", 0) + 1
            return False
        try:
            conn.send(self.hello())
            msg, _ = conn.recv()
        except (OSError, ConnectionError):
            self._silent = getattr(self, "_silent", 0) + 1
            conn.close()
            return False
        if isinstance(msg, Redirect) and hops > 0:
            conn.close()
            if msg.address != (self._lost or ("",))[0]:
                return self._try(msg.address, hops - 1)
            if self.clock.now() < self._lost[1]:
                return False  # a peer that has not noticed the loss yet: ask it again shortly
            self._lost = None  # ask the lost leader once (only our link to it may have broken)
            return self._try(msg.address, hops - 1, timeout=min(self.timing.connect_s, self.freeze_limit()))
        if isinstance(msg, Retry) and hasattr(self, "_retries"):
            self._retries[msg.replica] = msg
        if not isinstance(msg, Welcome):
            conn.close()
            return False
        conn.settimeout(None)
        self.conn, self.leader, self.term = conn, msg.leader, msg.term
        self.leader_bound = None  # a new leader measures its own steps: beat often until it tells its bound
        self.server.term = self.term
        self.server.leader_addr, self.server.lost_leader = addr, False
        self._last_rx = self.clock.now()
        threading.Thread(target=self._read, args=(conn,), name="leader-reader", daemon=True).start()
        return True

    def start_heartbeats(self) -> None:
        """Heartbeats from now on; the freeze clock starts now, not when the link was made (a
        connect that took a while, an election, is not a freeze)."""
        self._tick = self.clock.now()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()

    # ----- running ---------------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        if self.conn is not None:
            self.conn.try_send(msg)

    def _read(self, conn: Conn) -> None:
        try:
            while True:
                msg, _ = conn.recv()
                self.received(msg)
        except ConnectionError:
            if conn is self.conn and not self._stop:
                self.inbox.put(LeaderLost(why="connection closed", at=self.clock.now()))

    def received(self, msg: Message) -> None:
        """A message from the leader (the reader thread): note what the link itself keeps (the
        newest quorum, commit and hang bound), then hand it to the training thread's inbox."""
        self._last_rx = self.clock.now()
        if isinstance(msg, Quorum):
            msg = replace(msg, received_t=self.clock.wall())  # for the quorum's phase timings (docs/events.md)
            with self._quorum_lock:
                self.last_quorum = msg
            self.hang_timeout = self.leader_bound = msg.hang_timeout
        elif isinstance(msg, LeaderHeartbeat) and msg.hang_timeout is not None:
            self.hang_timeout = self.leader_bound = msg.hang_timeout
        elif isinstance(msg, Verdict) and msg.commit:
            q = self.last_quorum
            if q is not None and q.quorum_id == msg.quorum_id:
                self.settled = (msg.step, q.members)
        self.inbox.put(msg)

    def freeze_limit(self) -> float:
        """The silence (of the leader, of this process's own clock) taken for a freeze: the
        leader's newest hang bound (module docstring), or ``hang_before_quorum_s`` before any."""
        bound = self.hang_timeout if self.hang_timeout is not None else self.timing.hang_before_quorum_s
        return self.timing.frozen_after(bound)

    def stop_waiting(self) -> bool:
        """The job's final ``stop`` waits in the inbox: the run is over whatever happened since."""
        with self.inbox.mutex:
            return any(isinstance(m, Stop) for m in self.inbox.queue)

    def was_frozen(self, now: float | None = None) -> bool:
        """True once this process has been stopped longer than the hang timeout (a stale heartbeat
        clock tells the training thread at once after SIGCONT, before any stale message is acted on)."""
        now = self.clock.now() if now is None else now
        if not self.frozen.is_set() and now - self._tick > self.freeze_limit():
            self.frozen.set()
        return self.frozen.is_set()

    def _heartbeat(self) -> None:
        while not self._stop:
            self.clock.sleep(self.timing.heartbeat_s)
            if not self.beat(self.clock.now()):
                return

    def beat(self, now: float) -> bool:
        """One tick of the heartbeat thread at ``now`` (``Clock.now``, every ``Timing.heartbeat_s``):
        tell the leader what the training thread does (every ``Timing.heartbeat_period`` of the
        bound the leader told), and tell the training thread (its inbox) when the leader went
        silent, when this process was frozen, or when its own coordinator stopped; False once
        heartbeats must stop."""
        timeout = self.freeze_limit()
        if self.was_frozen(now):
            self.inbox.put(Frozen(gap_s=now - self._tick))
            return False
        self._tick = now
        # sent every heartbeat_period of the leader's bound (timing.py), give or take half a tick
        if now - self._sent >= self.timing.heartbeat_period(self.leader_bound) - self.timing.heartbeat_s / 2:
            self._sent = now
            s = self.status()
            self.send(Heartbeat(replica=self.replica, step=s.step, phase=s.phase, committed=s.committed,
                                pending=s.pending))
        # silence counts only if nothing waits unread: a member starved of CPU may run this
        # thread before its reader thread has taken the leader's pending messages
        if (self.conn is not None and self.leader != self.replica and now - self._last_rx > timeout
                and not self.conn.has_unread()):
            conn, self.conn = self.conn, None
            conn.close()
            self.inbox.put(LeaderLost(why=f"silent for {now - self._last_rx:.2f}s", at=now))
        if self._own_leader_stopped(now, timeout):
            self.inbox.put(Expelled("this replica's own coordinator stopped"))
            return False
        return True

    def _own_leader_stopped(self, now: float, timeout: float) -> bool:
        """While this replica follows its own coordinator, silence is never a reason to fail over;
        but once that coordinator has stopped (superseded or frozen) for a hang bound, its member
        must rejoin elsewhere even if the coordinator's ``expelled`` never reached it (it would
        otherwise wait for its own silent coordinator forever). A coordinator that stopped because
        it finished the job is not one of these: its ``stop`` waits in the inbox, and a training
        thread slow to read it (a loaded host) must find it, not an ``expelled``."""
        coord = self.server.coordinator
        if self.leader != self.replica or coord is None or not coord.stopped or coord.finished:
            self._own_stopped_since = None
            return False
        self._own_stopped_since = self._own_stopped_since or now
        return now - self._own_stopped_since > timeout

    def failover(self, lost: LeaderLost) -> None:
        """Find or become the next leader after losing the current one (``lost``: the
        ``leader_lost`` notice, with why and when)."""
        t0 = self.clock.now()
        if self.frozen.is_set():
            return  # we were the frozen one: the training thread rejoins instead
        old = self.leader
        self._failover(t0, dead=lost.why == "connection closed")
        self._lost = None
        self.events.emit("failover_done", replica=self.replica, old_leader=old, leader=self.leader,
                         why=lost.why, failover_s=round(self.clock.now() - lost.at, 4))

    def _failover(self, t0: float, dead: bool) -> None:
        # Peers that have not noticed the loss yet redirect us to the lost leader, and a stopped
        # process's kernel still accepts connections: asking it costs a whole timeout. So it is
        # not asked before one hang bound has passed, and then at most once.
        self._lost = (self.server.leader_addr or "", t0 + self.freeze_limit())
        self.server.lost_leader = True
        old = self.leader
        q = self.last_quorum
        addrs = q.addrs if q else {}
        # in-sync survivors first: a newcomer still healing has no part in the step in flight
        healing = set(q.heal) if q else set()
        candidates = sorted((r for r in addrs if r != old), key=lambda r: (r in healing, r))
        for cand in candidates:
            if cand == self.replica:
                if self._lead_after(t0, old if dead else None, candidates, q):
                    return
            elif self._try_for(addrs[cand].control, self.timing.candidate_s):
                return
        raise ConnectionError(f"replica {self.replica}: no surviving leader candidate among {candidates}")

    def _lead_after(self, t0: float, dead: int | None, candidates: list[int], q: Quorum | None) -> bool:
        """Become leader after losing leader ``old`` (``dead``: proven dead), waiting up to one lease
        TTL for its lease to lapse; or follow whoever claimed meanwhile. True once connected."""
        end = self.clock.now() + self.timing.lease_ttl_s + self.timing.candidate_s
        while True:
            try:
                coord = self.make_coordinator(term=self.term + 1, expected=set(candidates),
                                              last_quorum_id=q.quorum_id if q else 0, takeover_from=t0, previous=q,
                                              dead_term=self.term if dead is not None else None,
                                              dead=set() if dead is None else {dead})
            except (LeaseHeld, StoreUnreachable) as refused:
                held = refused if isinstance(refused, LeaseHeld) else None
                if held and held.term > self.term and held.replica != self.replica and self._try(held.control):
                    return True
                if self.clock.now() > end:
                    return False
                self.clock.sleep(self.timing.retry_s)
                continue
            self.server.coordinator = coord
            return self._try(self.server.addr)

    def _try_for(self, addr: str, seconds: float) -> bool:
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            try:
                conn = Conn.connect(addr, timeout=self.timing.probe_s)
                conn.close()
            except OSError:
                return False  # refused: that candidate is dead too
            if self._try(addr):
                return True
            self.clock.sleep(self.timing.candidate_retry_s)
        return False

    def close(self, bye: bool = True) -> None:
        self._stop = True
        if self.conn is not None:
            if bye:
                self.conn.try_send(Bye(self.replica))
            self.conn.close()
