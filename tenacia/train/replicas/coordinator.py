"""The coordinator: membership from heartbeats, a quorum for each step, and the commit verdict.

It runs as threads inside one replica process, the *leader*; it is not a separate service. Any
replica can become leader: the lowest-numbered survivor of the last quorum takes over when the
leader dies or freezes (``member.py``), so there is no single point of failure.

Contract (what is decided when, what each party may assume):
- Membership. A replica is a member from its ``hello`` until its connection breaks (a crash is
  seen at once: the kernel closes a dead process's sockets) or it is silent for longer than
  ``hang_timeout`` (SIGSTOP, a frozen host), or it stays in its compute phase longer than
  ``hang_timeout`` while a peer already waits in the all-reduce (a stuck step). ``hang_timeout``
  is ``max(hang_floor_s, hang_factor x median step time)``, from measured steps: no user-tuned
  timeout; taken again at every commit, and sent to the members with every leader heartbeat. Silence counts only while the leader hears its own member's heartbeats (they take the
  same path through this process): a leader starved of CPU, hearing nobody, expels nobody. A
  member declared hung is told ``expelled`` and must rejoin and heal. The stuck bound follows each
  member's own compute times too (``liveness.own_stuck_bound``): a replica that is slow, or a
  diloco round of many inner steps, is not taken for a hung one.
- Quorum. A ``quorum`` message names the members, the step they run next (all hold the same
  committed state), which of them share the batch, and which newcomers heal from which donor.
  Healing takes the quorum's first step; once that step commits every member holds the same
  state, so from the quorum's second step on all members share the batch (members and leader
  apply this rule on their own: no new quorum, no new process group).
  A new quorum is formed when a member is lost (at once), and when newcomers wait (at the next
  step boundary). It is never formed with fewer than ``min_replicas`` members.
- Ahead and Majority (``majority.py``): no quorum starts below a step a recently lost replica
  holds; without a valid exclusive lease, none from a minority of the last committed quorum; a
  lone leader with an exclusive lease steps down.
- Shares. The quorum names each sharer's ``shares``: positions in the step's global batch
  (``shares.py``), even shares on every normal step; under diloco and streaming, shares sized to
  each member's measured speed (``speed.py``), carried by the quorum and by each commit's verdict
  for the quorum's next step. When the new quorum runs the step that was
  just discarded (a member lost mid-step, also after a takeover), each surviving sharer keeps the
  share it had, and only the lost members' positions are handed out again (salvage): survivors
  reuse the gradients they computed for that step, the batch is still covered exactly once.
- Commit. After its all-reduce each member votes. When every member of the quorum voted ok, the
  leader records the step in the sample ledger, then sends ``verdict commit``; members apply the
  step only on that verdict. If a member is lost before that, the step is discarded everywhere:
  the next quorum carries ``resolve = {step, commit: false}``.
- Takeover (``takeover.py``): a new leader decides the step the old one may have been committing.
- The end. The commit of the job's last step sends ``stop`` to every member and leaves the
  coordinator ``finished`` (``StepCommit.finish_job``); a coordinator that is waiting for members
  once ``finished.json`` exists (they exited with the job) steps down and sends its own away.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from ...data.ledger import SampleLedger
from ...events import EventLog, read_events
from ..config import LOW_COMMUNICATION, NumericsConfig, ReplicaConfig
from ..numerics.judge import Judge
from . import votecheck
from .commit import StepCommit
from .forming import QuorumForming
from .lease import DirLease, Lease
from .liveness import MemberState, collective_stuck, expulsions
from .protocol import (
    Addrs,
    Bye,
    Expelled,
    Heartbeat,
    Hello,
    LeaderHeartbeat,
    Message,
    Quorum,
    Rechecked,
    Resolve,
    Vote,
    Welcome,
)
from .speed import SpeedLog
from .steplog import StepLog
from .timing import Clock, Timing
from .wire import Conn


class Coordinator(StepCommit, QuorumForming):
    def __init__(self, *, replica: int, term: int, host: str, cfg: ReplicaConfig, timing: Timing, total_steps: int,
                 events: EventLog, ledger: SampleLedger | None, expected: set[int], run_dir: Path, batch_size: int,
                 log_every: int = 10, last_quorum_id: int = 0, takeover_from: float | None = None,
                 previous: Quorum | None = None, clock: Clock | None = None, lease: Lease | None = None,
                 dead: set[int] | None = None, numerics: NumericsConfig | None = None):
        """The leader's state; its monitor thread runs from ``start`` (a test drives ``tick``).
        ``lease``: the term it holds (default: term ``term`` in the run directory); ``dead``: members
        of ``previous`` proven dead (the old leader, when its connection closed); ``numerics``: the
        numeric checks (``commit.py``), none when None or off."""
        self.lease = lease or DirLease(run_dir, term)
        self.replica, self.term, self.cfg, self.total_steps = replica, self.lease.term, cfg, total_steps
        self.timing, self.clock = timing, clock or Clock()
        self.run_dir, self.batch_size = run_dir, batch_size
        self.previous = previous  # after a takeover: the old leader's quorum as this member last saw it
        self.events, self.ledger = events, ledger
        self.expected = set(expected)  # who we wait for before the first quorum
        self.takeover = takeover_from is not None
        self.takeover_from = takeover_from
        self.lock = threading.RLock()
        self.members: dict[int, MemberState] = {}
        # the current quorum at its current step; its ``resolve`` is the fate of the step in
        # flight once that step was discarded (the next quorum carries it)
        self.quorum: Quorum | None = None
        self.quorum_id = last_quorum_id
        self.votes: dict[int, Vote] = {}
        self.checks = votecheck.build(cfg.vote_checks)  # judged on every step's votes (votecheck.py)
        # diloco, streaming: each sharer's share of a round sized to its measured speed (speed.py)
        self.speed = SpeedLog(timing.straggler_s) if cfg.sync in LOW_COMMUNICATION else None
        # shares resized at their ends (speed.stable_shares): a member trains ahead on its current share
        self.speculate = cfg.outer.speculate or cfg.outer.delay > 0
        self.judge = (Judge(numerics, replay=cfg.sync not in LOW_COMMUNICATION)
                      if numerics is not None and numerics.check else None)
        if self.judge is not None and events.path is not None:
            self.judge.restore(read_events(events.path))  # strikes an earlier leader gave
        self.rechecks, self.benched, self.must_heal, self.devices = {}, set(), set(), {}
        # the majority rule's base: (step, members) of the newest commit known here (module docstring)
        self.settled: tuple[int, tuple[int, ...]] = (0, ())
        self.dead: set[int] = set(dead or ())  # lost with a closed connection: cannot lead elsewhere
        self.parked: Quorum | None = None  # the last quorum while a minority waits (its resolve, its shares)
        self.refused: str | None = None
        self.reported: dict[int, int] = {}  # the step each replica last said it holds ("Ahead")
        self.recorded = 0  # the newest step this leader's ledger holds committed (its records and rewinds)
        self.lost_at: dict[int, float] = {}
        self.steps = StepLog(events=events, run_dir=run_dir, log_every=log_every, total_steps=total_steps,
                             timing=timing, clock=self.clock)
        self.started = self._tick = self._last_beat = self._last_fence = self.clock.now()
        self.quorum_id_start: int | None = None if self.takeover else last_quorum_id
        self.stopped = False
        self.finished = False  # the job's final stop was sent: this coordinator ended the run
        self.store = dist.TCPStore(host, 0, is_master=True, wait_for_workers=False,
                                   timeout=timedelta(seconds=timing.store_s))
        self.store_addr = f"{host}:{self.store.port}"
        events.emit("coordinator_changed", coordinator=replica, term=term,
                    takeover_s=None if takeover_from is None else round(self.clock.now() - takeover_from, 4))

    def start(self) -> Coordinator:
        """Run the monitor (``tick`` every ``Timing.tick_s``) and the lease's renewals in daemon
        threads until stopped."""
        self.lease.start(on_lost=lambda why: self.events.emit("lease_lost", coordinator=self.replica,
                                                               term=self.term, reason=why))
        threading.Thread(target=self._monitor, name="coordinator", daemon=True).start()
        return self

    # ----- timing ---------------------------------------------------------------------------------
    @property
    def hang_timeout(self) -> float:
        return self.timing.hang_bound(self.steps.step_times)

    # ----- messages from members (called by the control server's reader threads) ---------------------
    def on_hello(self, conn: Conn, msg: Hello) -> None:
        rid = msg.replica
        with self.lock:
            old = self.members.get(rid)
            if old is not None and old.conn is not conn:
                self._lose(rid, "crash", "restarted process replaced its old connection")
            self.dead.discard(rid)
            self.reported[rid] = msg.committed
            if msg.settled and msg.settled_step > self.settled[0]:
                self.settled = (msg.settled_step, msg.settled)
            self.members[rid] = MemberState(rid, conn, Addrs(msg.control, msg.heal), msg.committed, msg.pending,
                                            msg.quorum_seen, self.clock.now(), msg.pending_vote)
            self.devices[rid] = msg.device
            self.quorum_id = max(self.quorum_id, msg.quorum_seen)
            conn.try_send(Welcome(leader=self.replica, term=self.term))
            if self.quorum is None:
                self._maybe_form("join")
            # else: newcomers are admitted at the next step boundary (after the verdict), so the
            # step in flight is not thrown away for them

    def on_message(self, rid: int, msg: Message) -> None:
        with self.lock:
            if self.stopped or self._frozen():
                return
            m = self.members.get(rid)
            if m is None:
                return
            m.last_hb = self.clock.now()
            if isinstance(msg, Heartbeat):
                m.entered(msg.phase, msg.step, self.clock.now())
                m.committed = max(m.committed, msg.committed)  # verdicts may be ahead of it
                self.reported[rid] = m.committed
            elif isinstance(msg, Vote):
                self._on_vote(rid, msg)
            elif isinstance(msg, Rechecked):
                self._on_rechecked(rid, msg)
            elif isinstance(msg, Bye):
                self._lose(rid, "leave", "left cleanly")

    def on_disconnect(self, rid: int, conn: Conn) -> None:
        with self.lock:
            m = self.members.get(rid)
            if m is not None and m.conn is conn:
                self._lose(rid, "crash", "connection closed")

    # ----- commit: commit.py ---------------------------------------------------------------------------
    def _frozen(self) -> bool:
        """Was this process stopped longer than the hang bound? Then the members have elected
        another leader meanwhile: stop, whichever thread notices first."""
        gap = self.clock.now() - self._tick
        if gap <= self.timing.frozen_after(self.hang_timeout):
            return False
        if not self.stopped:
            self._stop()
            if (self.run_dir / "finished.json").exists():
                return True  # frozen through the job's finish: its records are final, write nothing
            self.events.emit("coordinator_frozen", coordinator=self.replica, gap_s=round(gap, 3))
        return True

    def superseded(self) -> bool:
        """The fence (``lease.py``): our lease no longer holds (a newer term exists; for etcd also:
        the lease expired unrenewed), so another leader may lead: step down and send our members
        away. A local check for etcd (the renewals run in their own thread)."""
        if self.lease.valid():
            return False
        self._stop()
        newest = self.lease.newest
        self.events.emit("coordinator_superseded", coordinator=self.replica, term=self.term, newest_term=newest)
        self._broadcast(Expelled(f"leader {self.replica} of term {self.term} lost its lease"
                                 + (f" to term {newest}" if newest > self.term else "")))
        return True

    def _job_over(self) -> bool:
        """A coordinator waiting for members after the job finished (``finished.json``: its peers
        have exited) would wait forever: it steps down and sends its members away, who then find
        the job over and exit (``leadership.refuse_if_finished``)."""
        if not (self.run_dir / "finished.json").exists():
            return False
        self._stop()
        self._broadcast(Expelled(f"leader {self.replica} of term {self.term}: the job has finished"))
        return True

    def _stop(self) -> None:
        """Stop leading and give the lease up, once (etcd: revoked, in the background)."""
        if not self.stopped:
            self.stopped = True
            threading.Thread(target=self.lease.release, name="lease-release", daemon=True).start()

    # ----- failures ------------------------------------------------------------------------------------
    def _lose(self, rid: int, kind: str, why: str) -> None:
        if self.stopped or self._frozen():
            return  # a frozen leader's members left because it froze: not failures of theirs
        m = self.members.pop(rid, None)
        if m is None:
            return
        self.lost_at[rid] = self.clock.now()
        if self.speed is not None:
            self.speed.forget(rid)
        if kind in ("hang", "evicted"):
            m.conn.try_send(Expelled(why, evict=kind == "evicted"))
        m.conn.close()
        if kind in ("crash", "leave", "evicted"):
            self.dead.add(rid)
        if kind != "leave":
            self.events.emit("failure_detected", kind=kind, replica=rid, reason=why,
                             silence_s=round(self.clock.now() - m.last_hb, 4))
        q = self.quorum
        if q is not None and rid in q.members:
            self.steps.stall_began()
            self.events.emit("step_discarded", step=q.step, reason=f"replica {rid} lost ({kind})")
            self.quorum = replace(q, resolve=Resolve(q.step, commit=False))
            self.votes = {}
            self._maybe_form(f"replica {rid} lost ({kind})")

    def _monitor(self) -> None:
        while not self.stopped:
            self.clock.sleep(self.timing.tick_s)
            self.tick(self.clock.now())

    def tick(self, now: float) -> None:
        """The periodic rules at time ``now`` (``Clock.now``): the leader's heartbeat, hang and stuck
        expulsion, a stuck collective, a waiting quorum, the fence; a frozen leader stops."""
        with self.lock:
            if self.stopped or self._frozen():
                return
            self._tick = now
            if now - self._last_beat >= self.timing.heartbeat_period(self.hang_timeout):  # members fail over on silence
                self._broadcast(LeaderHeartbeat(hang_timeout=self.hang_timeout))
                self._last_beat = now
            timeout, q = self.hang_timeout, self.quorum
            for rid, why in expulsions(self.members, self.replica, q, now, timeout, self.timing.stuck_bound(timeout),
                                       self.timing):
                self._lose(rid, "hang", why)
            in_quorum = [self.members[r] for r in (q.members if q else ()) if r in self.members]
            if q is not None and collective_stuck(q, in_quorum, now, timeout):
                # everyone is alive and waiting in the collective: the collective itself is stuck
                self.events.emit("step_discarded", step=q.step, reason=f"all-reduce stuck for > {timeout:.2f}s")
                self.quorum = replace(q, resolve=Resolve(q.step, commit=False))
                for m in in_quorum:
                    m.phase_since = now
                self._maybe_form("stuck collective")
            if self.quorum is None:
                if now - self._last_fence > self.timing.fence_check_s:
                    self._last_fence = now
                    if self._job_over():
                        return
                self._maybe_form("waiting")
            elif self.lease.exclusive or now - self._last_fence > self.timing.fence_check_s:
                self._last_fence = now  # exclusive: a local comparison, every tick
                self.superseded()

    def _broadcast(self, msg: Message) -> None:
        for m in list(self.members.values()):
            m.conn.try_send(msg)

    def close(self) -> None:
        self._stop()
