"""Quorum formation (a part of ``Coordinator``, a mixin: the same state and lock): who is in the
next quorum, from which step it runs, who shares the batch and how, and who heals from whom
(the coordinator's contract, "Quorum", "Ahead and Majority", "Shares").

A quorum is refused while a minority of the last committed quorum is live without an exclusive
lease, or while a recently lost replica holds a newer step (``majority.py``); a lone leader with
an exclusive lease steps down. The first quorum of a job rewinds the ledger to the step the
members resumed from; a redo of the step just discarded keeps each surviving sharer's share
(``shares.salvage_shares``); other steps get even shares, or under diloco and streaming shares
sized to measured speeds (``speed.py``).
"""

from __future__ import annotations

from typing import Any

from .majority import behind, minority
from .protocol import Expelled, Quorum, Resolve, Wait
from .shares import even_shares, salvage_shares
from .speed import sized_shares, stable_shares
from .takeover import resolve_takeover


class QuorumForming:
    def _maybe_form(self: Any, reason: str) -> None:
        if self.stopped:
            return
        live = sorted(self.members)
        if self.quorum is None and self.expected - set(live):
            grace = self.timing.join_grace_s if not self.takeover else self.hang_timeout
            if self.clock.now() - self.started < grace:
                return  # still waiting for the first members to say hello
        if len(live) < self.cfg.min_replicas or not live:
            if self.quorum is not None:
                self.quorum = None
                self._broadcast(Wait(f"{len(live)} live < min_replicas {self.cfg.min_replicas}"))
            return
        refused = minority(self.settled[1], self.dead, live, self.replica, self.lease.exclusive) or self._behind(live)
        if refused is not None:
            self._refuse(refused)
            return
        self.refused = None
        live = live[: self.cfg.max_replicas]
        last = self.quorum or self.parked
        resolve = last.resolve if last is not None else None
        if resolve is None and self.takeover and self.quorum is None:
            resolve = self._resolve_takeover(live)
        elif self.quorum is None and self.quorum_id_start is not None and self.ledger is not None:
            # the first quorum of a job: the ledger restarts at the step the members resumed from
            start = max(self.members[r].committed for r in live)
            self.ledger.rewind(start, term=self.term)
            self.recorded = start
            if start:
                self.events.emit("resumed", step=start, path=None, replicas=live)
        self.quorum_id_start = None
        committed = {r: self.members[r].committed for r in live}
        if resolve is not None and resolve.commit:
            for r in live:
                if self.members[r].pending == resolve.step:
                    committed[r] = resolve.step
        step = max(committed.values())
        # the newest step known held: reported by a replica, or recorded here (a commit every member
        # missed leaves no replica reporting it, and must not be recorded twice)
        held = max([*self.reported.values(), self.recorded])
        if self.ledger is not None and step < held:
            # every replica that held the newer steps is gone for good: the run goes on from here
            self.ledger.rewind(step, term=self.term)
            self.recorded = step
            self.events.emit("resumed", step=step, path=None, replicas=live, reason=f"no live replica holds step {held}")
        self.reported.update(committed)
        for r in [r for r in self.reported if r not in self.members]:
            self.reported[r] = min(self.reported[r], step)
        if step >= self.total_steps:
            self.finish_job(step)
            return
        # corrupt state heals from a peer; a replica found faulty computes no share of the redo
        in_sync = [r for r in live if committed[r] == step and r not in self.must_heal] or live
        sharers = [r for r in in_sync if r not in self.benched] or in_sync
        self.must_heal, self.benched = set(), set()
        prev, self.previous, self.parked = self.quorum or self.parked or self.previous, None, None
        if prev is not None and prev.step == step + 1 and prev.shares:
            shares = salvage_shares(prev.shares, sharers, self.batch_size)  # the same step again
        else:
            shares = self.shares_for(sharers)
        heal = {r: in_sync[i % len(in_sync)] for i, r in enumerate(r for r in live if r not in in_sync)}
        self.quorum_id += 1
        self.quorum = Quorum(
            quorum_id=self.quorum_id, term=self.term, leader=self.replica, step=step + 1, members=tuple(live),
            sharers=tuple(sharers), shares=shares, heal=heal, store=self.store_addr,
            addrs={r: self.members[r].addrs for r in live}, hang_timeout=self.hang_timeout, resolve=resolve,
            formed_t=self.clock.wall(), watch=self.judge.watched(step + 1) if self.judge else {})
        self.votes = {}
        if not self.settled[1]:
            self.settled = (0, tuple(live))  # a job's first quorum: the base until a step commits
        self.events.emit("quorum_changed", step=step, quorum_id=self.quorum_id, members=live, reason=reason,
                         healing=heal, since_commit_s=self.steps.stalled_for())
        self._broadcast(self.quorum)

    def shares_for(self: Any, sharers: list[int] | tuple[int, ...],
                   current: dict[int, tuple[int, ...]] | None = None) -> dict[int, tuple[int, ...]]:
        """Even shares, or (diloco, streaming) shares sized to the members' measured speeds; under
        speculation ``current`` (the round's) resized at the ends of its shares (``speed.stable_shares``)."""
        if self.speed is None:
            return even_shares(sharers, self.batch_size)
        sized = sized_shares(sharers, self.batch_size, self.speed.speeds())
        return stable_shares(sized, current) if self.speculate else sized

    def _behind(self: Any, live: list[int]) -> str | None:
        have = max(max(self.members[r].committed, self.members[r].pending or 0) for r in live)
        away = {r: (s, self.lost_at.get(r)) for r, s in self.reported.items() if r not in self.members}
        return behind(away, have, self.clock.now(), self.timing.stuck_bound(self.hang_timeout))

    def _refuse(self: Any, why: str) -> None:
        if self.quorum is not None:
            self.parked, self.quorum = self.quorum, None
        if why == "alone":
            self.events.emit("coordinator_alone", coordinator=self.replica, term=self.term,
                             last_quorum=list(self.settled[1]))
            self._stop()
            self._broadcast(Expelled(f"leader {self.replica} hears none of its last quorum: stepped down"))
            return
        if why != self.refused:
            self.refused = why
            self.events.emit("quorum_refused", coordinator=self.replica, reason=why)
            self._broadcast(Wait(why))

    def _resolve_takeover(self: Any, live: list[int]) -> Resolve | None:
        self.takeover = False
        return resolve_takeover({r: self.members[r] for r in live}, self.ledger, self.events, self.term)
