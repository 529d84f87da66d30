"""One replica process: a full copy of the model that trains in a quorum of peers.

The replica boundary is this process: inside it, the model could later be split over a group of
ranks (tensor/pipeline parallel); across replicas only averaged gradients and healing state move.

Per step (``run_step``; see ``coordinator.py`` for the contract): take a newer quorum first; in a
quorum's first step, donors offer their state and newcomers start fetching it; compute gradients
on this replica's share of the global batch (its positions in the quorum's ``shares``; gradients
it still holds for the same step, from a run of it that was discarded, are reused:
``shares.LocalGradients``); all-reduce them (sum) in the quorum's own process group, asleep on the
leader's inbox (the collective's future wakes it) so that a newer quorum abandons the collective
at once; vote, holding the step as one ``PendingStep`` (vote and reduced gradients) until the
verdict; apply on ``commit``. A quorum's ``resolve`` decides a step left pending by the last one.
What a step computes, reduces and applies is the sync strategy's (``sync.py``): gradients under
ddp; under diloco and streaming a round of inner steps and its pseudo-gradient (``LocalRound`` in
place of ``LocalGradients``; under streaming's overlap the contribution is built before the
compute and reduced beside it: ``reducing.py``, ``overlap.py``). A fresh group (gloo's, or the
long-link transport's: ``streams_group.py``) and fresh buffers are used for every quorum; an
older quorum's group is retired as soon as a newer quorum starts, in a background thread, never on
the training thread (tearing down a gloo group with a collective in flight can block for many
seconds; see ``Replica.retire_groups``).

A replica that was expelled (declared hung) or finds it was frozen rejoins in-process as a
newcomer and heals; a crashed one is restarted by the launcher and does the same.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from ... import hooks
from ..config import RunConfig
from ..trainer import Trainer
from . import addresses, votecheck
from .after_commit import AfterCommit
from .apply import PendingStep, expert_outcome
from .control_server import ControlServer, MemberStatus
from .device_slot import EXIT_EVICTED, device_name
from .group import GroupBuilder
from .heal import HealServer
from .healing import NewcomerHealing
from .leadership import JobFinished, Leadership
from .member import LeaderLink
from .numeric_member import NumericMember
from .protocol import (
    Expelled,
    Frozen,
    LeaderLost,
    Message,
    Quorum,
    Recheck,
    Resolve,
    Stop,
    Verdict,
    Vote,
    Wake,
)
from .reducing import ReducePhase
from .spare import wait_as_spare
from .speculating import Speculating
from .step_exits import EXIT_FINISH_LOST, Evicted, FinishLost, Rejoin, Superseded
from .sync import strategy
from .timing import Timing


def vote_to_send(vote: Vote, q: Quorum) -> Vote:
    """The vote as it goes to the leader: the step's batch of sample ids from the first sharer
    only, the one vote the leader's ledger reads it from (``commit.py``); the others send it
    empty (a diloco round's batch is 3,200 ids, 8.6 KB packed, in every member's vote). The member
    keeps its whole vote (``PendingStep``): a takeover's ledger reads a survivor's own."""
    return vote if not q.sharers or q.sharers[0] == vote.replica else replace(vote, batch=())


class Replica(NewcomerHealing, ReducePhase, AfterCommit, Speculating):
    def __init__(self, cfg: RunConfig, replica: int, seeds: list[str], trainer: Trainer | None = None):
        """``trainer``: one built (and loaded from disk) ahead of time by a spare process."""
        self.cfg, self.id, self.seeds = cfg, replica, seeds
        self.timing = Timing.from_config(cfg.replicas)
        torch.set_num_threads(cfg.replica_threads)
        self.preloaded = trainer is not None
        self.trainer = trainer or Trainer(cfg, source=f"replica:{replica}", write_ledger=False)
        self.trainer.events.source = f"replica:{replica}"
        self.events = self.trainer.events
        host = cfg.replicas.host
        self.server = ControlServer(replica, host, host)
        self.leadership = Leadership(cfg, replica, seeds, self.server, self.timing, self.events)
        self.heal_server = HealServer(host, host, timing=self.timing)
        self.phase = "idle"
        self.evaluated_s = 0.0  # seconds of the leader's evals since this replica's last vote (after_commit.py)
        self.pending_step = 0
        self.sync = strategy(cfg, self.trainer)
        self.checks = votecheck.build(cfg.replicas.vote_checks)
        self.pending: PendingStep | None = None
        self.grads = self.sync.local(self.trainer)  # this member's share of the step in flight
        self.numerics = NumericMember(cfg.numerics, self.trainer, self.grads, cfg.train.micro_batch_size,
                                      self.sync.grad_part, replay=not cfg.low_communication)
        self.server.device = device_name(replica)
        self.server.status = self.status
        self.link = self._new_link()
        self.groups: dict[int, GroupBuilder] = {}  # quorum id -> group (the current quorum's)
        self._verdict: Verdict | None = None
        self._publish_address()

    # ----- plumbing --------------------------------------------------------------------------------
    def _new_link(self) -> LeaderLink:
        return LeaderLink(self.id, self.server, self.heal_server.addr, self.status,
                          self.leadership.make_coordinator, self.events, self.timing)

    def _publish_address(self) -> None:
        addresses.publish(self.cfg.train.run_dir, self.id, self.server.addr, self.heal_server.addr)

    def status(self) -> MemberStatus:
        p = self.pending
        return MemberStatus(step=self.trainer.step + 1, phase=self.phase, committed=self.trainer.step,
                            pending=p.step if p else None, pending_vote=p.vote if p else None)

    def poll(self, block: float = 0.0) -> Message | None:
        """Next message from the leader; handles failover and rejoin on the way. A freeze found
        with the job's final stop waiting is no reason to rejoin: the run is over, and every
        message before the stop (the last verdict) came from the leader that ended it."""
        if self.link.was_frozen() and not self.link.stop_waiting():
            raise Rejoin("this process was frozen longer than the hang timeout")
        while True:
            try:
                msg = self.link.inbox.get(timeout=block) if block else self.link.inbox.get_nowait()
            except queue.Empty:
                return None
            if not isinstance(msg, Wake) and not (isinstance(msg, Frozen) and self.link.stop_waiting()):
                break
            block = 0.0  # a wake is a nudge only: take what else is queued without waiting again
        if isinstance(msg, Expelled):
            raise (Evicted if msg.evict else Rejoin)(f"expelled: {msg.reason}")
        if isinstance(msg, Frozen):
            raise Rejoin(f"frozen: {msg.gap_s}")
        if isinstance(msg, LeaderLost):
            self.link.failover(msg)
            return None
        return msg

    # ----- the loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        try:  # restarted after the job finished: it is over, whatever this replica's checkpoint holds
            self.leadership.refuse_if_finished()
        except JobFinished as e:
            print(f"replica {self.id}: {e}; exiting without writing", file=sys.stderr, flush=True)
            return 0
        if self.cfg.checkpoint.resume and not self.preloaded:
            # a starting point only: the job resumes (or not) when the first quorum forms
            self.trainer.resume(event="replica_checkpoint_loaded")
        if self.trainer.step >= self.cfg.train.steps:
            return 0  # restarted after the job finished: nothing left to do
        self.numerics.settle()
        self.seeds = self.leadership.seeds = addresses.resolve(self.cfg.train.run_dir, self.seeds, self.timing.start_s)
        if not self.seeds:  # the first replica of the job leads
            self.server.coordinator = self.leadership.first_coordinator()
        self.link.connect(self.leadership.peer_addresses if self.seeds else lambda: [self.server.addr])
        self.link.start_heartbeats()
        self.events.emit("run_started", step=self.trainer.step, replicas=self.cfg.replicas.count, replica=self.id,
                         **self.trainer.sampler_identity())
        try:
            while True:
                try:
                    return self.follow_quorums()
                except Rejoin as e:
                    self.leadership.refuse_if_finished()
                    if self.ended_here():
                        return self.finish()
                    self.events.emit("replica_expelled", replica=self.id, reason=str(e))
                    self.rejoin()
        except JobFinished as e:  # not in the event log: a finished run's records stay as they are
            print(f"replica {self.id}: {e}; exiting without writing", file=sys.stderr, flush=True)
            return 0
        except Evicted as e:
            print(f"replica {self.id} on {self.server.device}: {e}", file=sys.stderr, flush=True)
            return EXIT_EVICTED
        except FinishLost as e:
            self.events.emit("finish_lost", replica=self.id, step=self.trainer.step, reason=str(e))
            print(f"replica {self.id}: {e}; the job is not finished", file=sys.stderr, flush=True)
            return EXIT_FINISH_LOST
        finally:
            self.link.close()

    def follow_quorums(self) -> int:
        nxt: Message | None = None
        while True:
            msg = nxt or self.poll(block=self.timing.poll_s)
            nxt = None
            if isinstance(msg, Stop):
                return self.finish()
            if isinstance(msg, Quorum):
                nxt = self.run_quorum(msg)
            # a verdict, wait or heartbeat between quorums needs no action

    def rejoin(self) -> None:
        """Come back as a newcomer after being expelled or frozen: step down if leading, drop what
        is pending, find the current leader through the peers, and heal in the next quorum."""
        if self.server.coordinator is not None:
            self.server.coordinator.close()
            self.server.coordinator = None
        self.link.close(bye=False)
        self.pending = None
        self.grads.drop()
        last, settled, bound = self.link.last_quorum, self.link.settled, self.link.hang_timeout
        self.link = self._new_link()
        self.link.last_quorum, self.link.settled, self.link.hang_timeout = last, settled, bound
        self.server.lost_leader = True
        self.link.connect(self.leadership.peer_addresses)
        self.link.start_heartbeats()

    def run_quorum(self, q: Quorum) -> Message:
        """Run steps in quorum ``q`` until a newer quorum or a stop arrives; return that message."""
        self.apply_resolve(q.resolve)
        builder = self.group_for(q)
        first = True
        while True:
            try:
                self.run_step(q, builder, heal=first)
            except Superseded as s:
                return s.args[0]
            first = False
            sized = self._verdict.shares if self._verdict is not None else None
            q = q.next_step(self.cfg.step_samples, sized)  # healed newcomers share from the 2nd step on
            self.link.advance(q)

    def apply_resolve(self, resolve: Resolve | None) -> None:
        pending, self.pending = self.pending, None
        if resolve is not None and pending is not None and resolve.step == pending.step and resolve.commit:
            self.apply(pending)

    def wake(self, *_: Any) -> None:
        """Nudge a training thread blocked in ``wait_until`` (from a group, fetch or collective)."""
        self.link.inbox.put(Wake())

    def wait_until(self, done: threading.Event | Any, what: str) -> None:
        """Sleep on the leader's inbox until ``done()`` holds; a newer quorum or stop supersedes the
        wait. Whatever ``done`` watches must call ``wake`` when it changes: the thread sleeps, it does
        not spin (four replicas on two cores: a polling waiter takes CPU from the members computing)."""
        while not done():
            self.take(self.poll(block=self.timing.poll_s))

    def take(self, msg: Message | None) -> None:
        """A message from the leader in the middle of a step: a newer quorum or a stop supersedes
        the step, a verdict is kept, a recheck answered."""
        if isinstance(msg, (Quorum, Stop)):
            raise Superseded(msg)
        if isinstance(msg, Verdict):
            self._verdict = msg
        elif isinstance(msg, Recheck):
            self.enter("recheck", msg.step)
            self.link.send(self.numerics.answer(msg, self.id))
            self.enter("vote", msg.step)

    # ----- one step: quorum, shares, compute, reduce, vote, apply ------------------------------------
    def run_step(self, q: Quorum, builder: GroupBuilder, heal: bool) -> None:
        """Step ``q.step`` of quorum ``q`` (``heal``: the quorum's first step, when newcomers heal)."""
        self._verdict = None
        self.take_newer_quorum()
        fetch = self.start_healing(q) if heal else None
        if self.id not in q.heal and q.step != self.trainer.step + 1:
            raise Rejoin(f"quorum runs step {q.step} but this replica committed {self.trainer.step}")
        self.pending_step = q.step
        self.enter("compute", q.step)
        if self.id not in q.heal:  # a healing member's state is replaced by its donor's in this step
            self.numerics.at_rest(q.step)
        timing = {"received": q.received_t, "compute_start": time.time()} if heal else None
        t0 = time.monotonic()
        check = self.cfg.numerics.check
        flight = self.begin_overlap(q, builder, check) if self.sync.overlaps else None
        share = self.compute_share(q)
        self.speculation_event(q.step)
        if share.tokens:  # the leader's evals since its last vote count as its compute: shares sized to both
            ahead = getattr(self.grads, "kept_seconds", 0.0)  # a speculation's inner batches taken by this round
            share = replace(share, compute_s=round(time.monotonic() - t0 + self.evaluated_s + ahead, 6))
        self.evaluated_s = 0.0
        if flight is not None:  # the contribution is in flight since the step began
            flat, own = flight.flat, flight.measured
            share = replace(share, loss=hooks.tamper("loss", q.step, share.loss))
            own = own and {**own, "loss": share.loss}
        else:
            flat = self.sync.contribution(self.trainer, self.grads, q.step)
            own = None
            if check and self.id in q.sharers:
                flat, own = self.numerics.outcome(q.step, flat, share.loss)
                share = replace(share, loss=own["loss"])
            elif hooks.tampering():
                flat, loss = self.numerics.tampered(q.step, flat, share.loss)
                share = replace(share, loss=loss)
        audits = self.numerics.audits(q, q.watch, self.id) if check else []
        if timing:
            timing["compute_end"] = time.time()

        def vote() -> tuple[PendingStep, bool]:
            """Reduce (or wait for the reduce in flight), vote and send the vote."""
            nonlocal flat
            ok = self.reduce(flat, builder, timing) if flight is None else self.reduce_in_flight(flight, builder, timing)
            flat = hooks.tamper("reduced_grads", q.step, flat)
            if fetch is not None:
                ok = self.finish_healing(fetch, q) and ok
            self.enter("vote", q.step)
            checks = votecheck.measure_all(self.checks, self.trainer, flat) if self.checks else {}
            if check:
                checks["numerics"] = self.numerics.report(own, flat, q.step, audits)
            experts = expert_outcome(self.trainer.model, flat) if ok else {}
            vote = replace(share, ok=ok, timing=timing, checks=checks or None, **experts)
            pending = PendingStep(vote, flat)
            self.pending = pending if ok else None
            self.link.send(vote_to_send(vote, q))
            return pending, ok

        if flight is None and self.delays(q):  # the reduce beside the next round's first inner batches
            flight = self.begin_delayed(q, builder, flat)
            pending, ok = self.train_ahead(q, flight, vote)
        else:
            pending, ok = vote()
        if ok and self.cfg.replicas.outer.speculate and self.cfg.low_communication and self.id in q.sharers:
            self.speculate(q, pending)
        self.wait_until(lambda: self._verdict is not None and self._verdict.step == q.step, "verdict")
        self.enter("idle", q.step)
        if not self._verdict.commit:
            if self._verdict.skip:  # the batch is dropped: its samples are recorded as skipped
                self.grads.drop()
                self.trainer.sampler.advance(self.cfg.step_samples)
            raise Superseded(self._await_next("step discarded"))
        self.apply(pending)
        self.pending = None
        self.after_commit()

    def take_newer_quorum(self) -> None:
        """A join's quorum is sent right after the verdict just applied: take it before computing a
        step of the old quorum that it would throw away (and before a donor's offer waits on it)."""
        while (msg := self.poll()) is not None:
            if isinstance(msg, (Quorum, Stop)):
                raise Superseded(msg)

    def compute_share(self, q: Quorum) -> Vote:
        """Gradients of this member's share of the step's batch into the parameters' ``.grad``
        (none for a newcomer); returns the vote that describes them, not ok until reduced."""
        t = self.trainer
        vote = Vote(replica=self.id, quorum_id=q.quorum_id, step=q.step, ok=False, start=t.sampler.position)
        if self.id in q.sharers:
            ids = t.sampler.peek(self.cfg.step_samples)
            positions = q.shares[self.id]
            loss, tokens, reused = self.grads.compute(q.step, positions, ids, t.data.train.get,
                                                      self.cfg.train.micro_batch_size, t.device,
                                                      sharers=len(q.sharers))
            vote = replace(vote, ids=tuple(ids[p] for p in positions), batch=tuple(ids), tokens=tokens, loss=loss,
                           reused=reused)
        else:
            self.grads.drop()
        hooks.reach("mid_step", q.step)
        return vote

    def _await_next(self, why: str) -> Message:
        while True:
            msg = self.poll(block=self.timing.poll_s)
            if isinstance(msg, (Quorum, Stop)):
                return msg

    def apply(self, pending: PendingStep) -> None:
        hooks.reach("phase:apply", pending.step)
        self.sync.apply(self.trainer, self.grads, pending, self.cfg)
        q = self.link.last_quorum
        self.numerics.settle(len(q.members) if q is not None else None)

    def enter(self, phase: str, step: int) -> None:
        """The step's phases (``compute``, ``allreduce``, ``vote``, ``idle``): heartbeats report
        the phase; ``hooks`` point ``phase:<name>`` is reached on entering it (fault injection)."""
        self.phase = phase
        hooks.reach(f"phase:{phase}", step)


def run_replica(cfg: RunConfig, replica: int | None, join: list[str],
                on_start: Callable[[int, Any], None] | None = None) -> int:
    """One replica process's life; ``replica`` None makes it a warm spare that waits for an id.
    The process entry is ``tenacia replica`` (``tenacia.run``), which the launcher starts;
    ``on_start(replica, events)`` runs once the id is known (fault injection installs itself)."""
    # Heartbeat, heal and group threads wait on the training thread's GIL: hand it over every 1 ms
    # (CPython's default is 5 ms), so they answer within a few milliseconds.
    sys.setswitchinterval(0.001)
    trainer = None
    if replica is None:
        replica, join, trainer = wait_as_spare(cfg)
    member = Replica(cfg, replica, join, trainer)
    if on_start is not None:
        on_start(replica, member.events)
    return member.run()
