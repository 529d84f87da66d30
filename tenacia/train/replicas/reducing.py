"""A replica's reduce phase (a part of ``Replica``): the quorum's group, and the step's reduce,
after its compute or, under streaming's overlap, beside it (``overlap.py``).

The group is a fresh one per quorum, built off the training thread (``group.GroupBuilder``):
gloo's, or the long-link transport's when ``replicas.outer.transport = "streams"`` under diloco
or streaming (``streams_group.py``). Either way the training thread sleeps on the leader's inbox
while the reduce runs (a newer quorum supersedes the step at once), a peer lost mid-exchange
makes the reduce raise and the member vote no, and a group that could not be built supersedes
the step (the leader forms another quorum).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ... import hooks
from .group import GroupBuilder, retire
from .overlap import InFlight
from .protocol import Quorum
from .step_exits import Superseded


class ReducePhase:
    def group_for(self: Any, q: Quorum) -> GroupBuilder:
        """Quorum ``q``'s group (built once per quorum); the older quorums' groups are retired."""
        outer = self.cfg.replicas.outer
        streams = (q.members, outer.mesh, q.step) if self.cfg.low_communication and outer.transport == "streams" \
            else None
        builder = self.groups.get(q.quorum_id) or GroupBuilder(
            q.store, q.quorum_id, q.rank(self.id), len(q.members), self.cfg.replicas.host,
            notify=self.wake, timing=self.timing, streams=streams)
        self.groups[q.quorum_id] = builder
        self.retire_groups(q.quorum_id)
        return builder

    def reduce(self: Any, flat: torch.Tensor, builder: GroupBuilder, timing: dict[str, Any] | None) -> bool:
        """Combine ``flat`` over the quorum (the sync strategy); False when a peer died mid-collective."""
        self.wait_until(builder.done.is_set, "process group")
        if builder.error:
            raise Superseded(self._await_next(f"group failed: {builder.error}"))
        self.enter("allreduce", self.pending_step)
        try:
            self.sync.reduce(flat, builder.pg, lambda done: self.wait_until(done, "all-reduce"), self.wake,
                             self.pending_step)
            if timing:
                timing.update(group_ready=builder.ready_t, reduced=time.time())
        except Superseded:
            raise
        except Exception:  # noqa: BLE001 - a peer died mid-collective: vote no
            return False
        return True

    def begin_overlap(self: Any, q: Quorum, builder: GroupBuilder, check: bool) -> InFlight:
        """Build this member's contribution from its state at rest and start reducing it, before the
        step's compute (``overlap.py``); a member healing in the step contributes zeros."""
        sharing, step = self.id in q.sharers and self.id not in q.heal, q.step
        flat = hooks.tamper("local_grads", step, self.sync.sent(self.trainer, step, sharing))
        measured = self.numerics.measure(flat) if check and sharing else None
        return InFlight(flat, step, lambda f, pg: self.sync.reduce(f, pg, lambda done: None, lambda *_: None, step),
                        builder, self.wake, measured)

    def reduce_in_flight(self: Any, flight: InFlight, builder: GroupBuilder, timing: dict[str, Any] | None) -> bool:
        """Wait for the reduce started by ``begin_overlap``; False when a peer died mid-exchange.
        As after a blocking reduce, the wait for the group is not counted in the ``allreduce``
        phase (the leader's stuck-collective rule times that phase only)."""
        self.wait_until(builder.done.is_set, "process group")
        if builder.error:
            raise Superseded(self._await_next(f"group failed: {builder.error}"))
        self.enter("allreduce", self.pending_step)
        self.wait_until(flight.done.is_set, "all-reduce")
        if timing and flight.error is None:
            timing.update(group_ready=builder.ready_t, reduced=time.time())
        return flight.error is None

    def retire_groups(self: Any, current: int) -> None:
        """Retire the groups of quorums older than ``current`` when it starts: no member uses them
        again (a peer still inside one of their collectives gets an error at once, and its vote
        for an old quorum is ignored), and a group whose peer was killed mid-collective can keep
        its TCP loop spinning, taking CPU from the step that redoes the lost work. ``group.retire``
        tears each down in a daemon thread: the training thread never blocks, whatever collective
        is still in flight."""
        for qid in [k for k in self.groups if k < current]:
            retire(self.groups.pop(qid))
