"""A replica's speculative outer step (a part of ``Replica``; ``replicas.outer.speculate``, docs/sync.md).

Under diloco (and streaming's eager step) a member that voted on round ``r`` waits for the
leader's verdict: one round trip, and the slowest member's compute when this one was faster.
Once its exchange is reduced it holds the round's average, so it can compute where round
``r + 1``'s inner steps would start if ``r`` commits (``OuterRounds.start_after``: the outer step
and the landed parameters on copies, the same operations, the same bits). It trains round
``r + 1``'s first inner batches from there while the verdict is in flight, on the share and batch
the commit would give if the shares stay as they are (the leader holds them steady under
speculation, ``speed.stable_shares``), and keeps them aside (``LocalRound.speculate``), leaving
the model and the inner moments as they were.

Contract:
- the commit, the evaluation and a checkpoint see exactly the state they would without
  speculation (the model at rest, the inner moments of the round's end): a checkpoint is the same
  bits, and a resume, a heal or a redo behaves as without it;
- round ``r + 1``'s compute takes the speculative inner batches only when its share, batch,
  sharers and start equal the assumed ones bit for bit (``LocalRound.compute``); they then count
  in the round's compute time (shares are sized to speeds: ``Vote.compute_s``). Otherwise they are
  dropped, and the round is trained from its start with the moments of the round's end;
- the verdict is still read between inner batches (and a newer quorum or a stop supersedes the
  step as in any wait); the first inner batch runs in any case;
- nothing is committed or recorded by it: the ledger records each sample once, when its round
  commits. One ``speculation`` event a round says what became of it (docs/events.md).

The delayed outer step (``replicas.outer.delay``, diloco, in place of speculation) trains ahead
earlier: right after the round's compute, beside its reduce (``begin_delayed``, ``train_ahead``),
the next round's first ``delay`` inner batches from this member's own end of the round, which that
round rebases on its start (``LocalRound``); the vote goes out between two of them once the reduce
has landed. The same contract holds but the first point's: the batches ahead are an algorithm's
(a delayed update), so the run is not plain diloco's, but it is the same bits whether they were
trained ahead or by the round itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ... import hooks
from .apply import PendingStep
from .group import GroupBuilder
from .overlap import InFlight
from .protocol import Quorum


class Speculating:
    def speculate(self: Any, q: Quorum, pending: PendingStep) -> None:
        """After voting on ``q.step``: train round ``q.step + 1``'s first inner batches ahead until the
        verdict comes (module docstring); nothing when this member has no share of that round."""
        nxt = q.next_step(self.cfg.step_samples, q.shares if q.sharers == q.members else None)
        if nxt.step <= self.cfg.train.steps and nxt.shares.get(self.id):
            start = self.sync.start_after(self.trainer, self.grads, pending)
            self._ahead(nxt, start, lambda: self._no_verdict(q.step, nxt.step))

    def _ahead(self: Any, nxt: Quorum, start: list, more: Callable[[], bool], limit: int | None = None) -> None:
        """Round ``nxt.step``'s first inner batches, on this member's share of ``nxt`` (the current
        one) and the batch after the sampler's, from ``start`` (``LocalRound.speculate``)."""
        t, cfg = self.trainer, self.cfg
        batch = t.sampler.ids_at(t.sampler.position + cfg.step_samples, cfg.step_samples)
        self.grads.speculate(nxt.step, nxt.shares[self.id], batch, t.data.train.get, cfg.train.micro_batch_size,
                             t.device, sharers=len(nxt.sharers), start=start, more=more, limit=limit)

    # ----- the delayed outer step (``replicas.outer.delay``) ------------------------------------------
    def delays(self: Any, q: Quorum) -> bool:
        """Whether round ``q.step``'s reduce runs beside round ``q.step + 1``'s first inner batches:
        under ``delay``, for a member that trained a share of it."""
        g = self.grads
        return self.cfg.replicas.outer.delay > 0 and self.id in q.sharers and g.local is not None and \
            g.step == q.step

    def begin_delayed(self: Any, q: Quorum, builder: GroupBuilder, flat: torch.Tensor) -> InFlight:
        """Start reducing round ``q.step``'s contribution ``flat`` (built, measured) on a thread of its own."""
        return InFlight(flat, q.step, lambda f, pg: self.sync.reduce(f, pg, lambda done: None, lambda *_: None, q.step),
                        builder, self.wake)

    def train_ahead(self: Any, q: Quorum, flight: InFlight, vote: Callable[[], Any]) -> Any:
        """Under ``delay``: while ``flight`` reduces round ``q.step``, train round ``q.step + 1``'s first
        ``delay`` inner batches from this member's own parameters at the round's end (``grads.local``);
        ``vote()`` (wait for the reduce, vote, send) runs between two of them as soon as the reduce
        has landed, else after them. Returns what ``vote()`` returned."""
        voted: list[Any] = []
        nxt = q.next_step(self.cfg.step_samples, q.shares if q.sharers == q.members else None)

        def more() -> bool:
            hooks.reach(f"speculating:{self.id}", nxt.step)
            while (msg := self.poll()) is not None:
                self.take(msg)
            if not voted and flight.done.is_set():
                voted.append(vote())
            return True

        if nxt.step <= self.cfg.train.steps and nxt.shares.get(self.id):
            self._ahead(nxt, [v.clone() for v in self.grads.local], more, limit=self.cfg.replicas.outer.delay)
        return voted[0] if voted else vote()

    def _no_verdict(self: Any, step: int, ahead: int) -> bool:
        """Between speculative inner batches of round ``ahead``: take what the leader sent; whether
        the verdict on ``step`` is still to come. Nothing past the verdict is read (a join's quorum
        may follow it: the commit comes first, as in ``wait_until``). Kill point
        ``speculating:<replica>@<ahead>``."""
        hooks.reach(f"speculating:{self.id}", ahead)

        def arrived() -> bool:
            return self._verdict is not None and self._verdict.step == step

        while not arrived() and (msg := self.poll()) is not None:
            self.take(msg)
        return not arrived()

    def speculation_event(self: Any, step: int) -> None:
        """What became of a speculation of round ``step`` (its ``compute`` just ran), if there was one."""
        spec = getattr(self.grads, "speculated", None)
        if spec is not None:
            batches, seconds, kept = spec
            self.events.emit("speculation", step=step, replica=self.id, batches=batches, seconds=round(seconds, 4),
                             kept=kept)
