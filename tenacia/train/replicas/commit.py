"""The commit rule: every member's vote in, one verdict out (the coordinator's contract, "Commit").

A part of ``Coordinator`` (a mixin: the same state and lock). When every member of the quorum
voted ok and no vote check objects, the numeric judge (``numerics/judge.py``, when
``numerics.check``) decides: commit; discard (the step is redone: members whose state is corrupt
heal in the next quorum, a faulty one computes no share in the redo, a lemon is evicted by name);
skip (the batch is dropped and its samples recorded as skipped); or recheck (the suspect and a
healthy peer re-execute the suspect's share, ``Recheck``; their ``Rechecked`` answers give the
verdict). Every trigger, re-execution and verdict is an event (``docs/events.md``). Under diloco and
streaming a commit also takes the votes' speed measurements and sizes the next round's shares
(``speed.py``; the verdict carries them), and reports stragglers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..numerics.judge import Decision, Judge, Outcome, Report
from . import votecheck
from .protocol import Recheck, Rechecked, Resolve, Stop, Verdict, Vote
from .speed import SpeedLog


class StepCommit:
    """Commit, discard, skip or recheck the step in flight (module docstring)."""

    judge: Judge | None
    rechecks: dict[int, Outcome]
    benched: set[int]  # members that compute no share when the discarded step is redone
    must_heal: set[int]  # members whose state is corrupt: they heal in the next quorum
    devices: dict[int, str]  # replica -> its device (host:slot), from its hello
    speed: SpeedLog | None  # diloco, streaming: measured speeds, the next round's shares, stragglers

    def _on_vote(self: Any, rid: int, msg: Vote) -> None:
        q = self.quorum
        if q is None or msg.quorum_id != q.quorum_id or msg.step != q.step:
            return
        self.votes[rid] = msg
        if set(self.votes) != set(q.members):
            return
        if self.superseded():
            return
        objection = votecheck.objection(self.checks, self.votes) if self.checks else None
        ok = all(v.ok for v in self.votes.values()) and objection is None
        if not ok or self.judge is None:
            self._finish_step(q, ok, objection or "a member failed the step")
            return
        try:
            reports = {r: Report.of(v.checks["numerics"]) for r, v in self.votes.items()}
        except (KeyError, TypeError, ValueError) as e:  # a vote corrupted beyond reading
            self._finish_step(q, False, f"a numeric report could not be read ({e!r})")
            return
        self._decide(q, self.judge.on_votes(q.step, reports, q.sharers))

    def _on_rechecked(self: Any, rid: int, msg: Rechecked) -> None:
        rc, q = self.judge.round if self.judge else None, self.quorum
        if rc is None or q is None or (msg.quorum_id, msg.step, msg.suspect) != (q.quorum_id, q.step, rc.suspect):
            return
        try:
            self.rechecks[rid] = Outcome.of(msg.outcome)
        except (KeyError, TypeError, ValueError):
            return
        self.events.emit("numeric_reexecuted", step=q.step, replica=rid, suspect=rc.suspect,
                         reproduced=self.rechecks[rid].same(rc.original))
        peer_run = rc.peer_run or self.rechecks.get(rc.peer)
        if rc.suspect in self.rechecks and peer_run is not None:
            self._decide(q, self.judge.on_rechecked(q.step, self.rechecks[rc.suspect], peer_run))

    def _decide(self: Any, q: Any, d: Decision) -> None:
        if d.action == "commit" and not d.verdict:
            self._finish_step(q, True)
            return
        if d.action == "recheck":
            rc = d.recheck
            self.rechecks = {}
            self.events.emit("numeric_trigger", step=q.step, kind=rc.kind, suspect=rc.suspect, peer=rc.peer,
                             auditor=rc.auditor, reason=d.reason)
            for r in {rc.suspect} if rc.peer_run is not None else {rc.suspect, rc.peer}:
                self.members[r].conn.try_send(Recheck(quorum_id=q.quorum_id, step=q.step, suspect=rc.suspect,
                                                      share_of=rc.of, chunks=rc.chunks))
            return
        self.events.emit("numeric_verdict", step=q.step, verdict=d.verdict, suspect=d.suspect, reason=d.reason,
                         heal=d.heal, evict=d.evict, strikes=d.strikes,
                         devices={r: self.devices.get(r, "") for r in {*d.heal, *d.evict, *d.strikes}})
        if d.action == "commit":  # a verdict that lets the step stand
            self._finish_step(q, True)
            return
        if d.action == "skip":
            first = self.votes[q.sharers[0]]
            if self.ledger is not None:
                self.ledger.skip(q.step, first.start, list(first.batch), d.reason, term=self.term)
            self._finish_step(q, False, d.reason, skip=True)
            return
        self.benched = set(d.bench)
        self.must_heal |= set(d.heal)
        for r in d.evict:
            self.events.emit("replica_evicted", replica=r, device=self.devices.get(r, ""), step=q.step,
                             strikes=d.strikes.get(r), reason=d.reason)
            self.judge.forget(r)
            self._lose(r, "evicted", d.reason)
        if not d.evict:  # a loss has discarded the step already
            self._finish_step(q, False, d.reason)

    def _finish_step(self: Any, q: Any, ok: bool, reason: str = "", skip: bool = False) -> None:
        """Send the verdict on step ``q.step`` and move on: the next step of the quorum, a new
        quorum for waiting newcomers, or (discarded) a new quorum that redoes the step."""
        step = q.step
        first = self.votes[q.sharers[0]]
        if ok and self.ledger is not None:
            self.ledger.record(step, first.start, list(first.batch), term=self.term)
            self.recorded = step
        sized = None
        if ok and self.speed is not None:  # diloco, streaming: the next round's shares follow measured speeds
            self.speed.observe(self.votes)
            for r, speed, median, for_s in self.speed.stragglers(q.members, self.clock.now()):
                self.events.emit("straggler", step=step, replica=r, tokens_per_s=round(speed, 1),
                                 median_tokens_per_s=round(median, 1), for_s=round(for_s, 1))
            sized = self.shares_for(q.members, q.shares)
        self._broadcast(Verdict(quorum_id=q.quorum_id, step=step, commit=ok, skip=skip, shares=sized))
        for r in q.members:
            self.members[r].committed = step if ok else self.members[r].committed
            self.reported[r] = self.members[r].committed
            self.members[r].pending = None
        votes, self.votes = self.votes, {}
        if ok:
            self.settled = (step, q.members)
            self.steps.committed(q, votes)
            self.quorum = q.next_step(self.batch_size, sized)  # healed newcomers are in sync now
            if step >= self.total_steps:
                self.finish_job(step)
                return
        else:
            self.events.emit("step_discarded", step=step, reason=reason, **({"skipped": True} if skip else {}))
            # a skipped batch is gone: the redo draws the next one, nobody salvages gradients
            self.quorum = replace(q, resolve=Resolve(step, commit=False), shares={} if skip else q.shares)
        waiting = [r for r in self.members if r not in q.members]
        if waiting or not ok:
            self._maybe_form("join" if ok else "retry")

    def finish_job(self: Any, step: int) -> None:
        """Step ``step`` committed, the job's last: every member (this replica's own too) is told to
        stop, and the coordinator is ``finished``: not a stopped leader its own member must leave."""
        self.finished = True
        self._broadcast(Stop(reason="finished", step=step))
        self._stop()
