"""A member's part of an outer round in flight (diloco, streaming): its inner steps, kept until the round is decided.

The counterpart of ``shares.LocalGradients`` for the low-communication strategies: a share is a
run of the round's batch, trained as inner AdamW steps on this replica's own parameters and
optimizer. Kept aside so that a round discarded because a peer was lost, and redone by the next
quorum with the same share (``shares.salvage_shares``), reuses what this member trained and only
trains the positions handed to it in addition, continuing from where it stopped.

Invariant: outside ``compute`` and ``speculate`` the model holds this replica's parameters as
they were when the round started (what a donor offers, what a checkpoint saves), and the inner
optimizer the moments of the last round trained. ``local`` is None, or holds the
parameters after inner steps over exactly the positions ``held`` names for round ``step``,
trained by one inner-step run per entry of ``chunks`` in that order, from the round's start.
``drop`` forgets it (the model already holds the start); ``compute`` is the only writer. With a
``begin`` (the eager outer step) the inner steps start where ``begin`` moves the parameters at rest,
and ``origin`` holds that start while ``local`` is held.

Inner steps. The round's ``inner_steps x train.batch_size`` samples are shared by the quorum's
sharers; an inner batch holds what an even share puts in each of H (``inner_steps``) steps,
``len(batch) / (H x sharers)`` samples, and a share is trained as ``round(len(share) / that)``
contiguous inner batches of near-equal size (``inner_batches``). With even shares every replica runs H inner
steps per round whatever the quorum's size; with shares sized to measured speeds (``speed.py``) a
faster replica runs more inner steps of the same size, a slower one fewer: every inner step then
costs what a solo run's does (a share cut into H smaller batches would pay the per-step cost of the
optimizer and of Python H times on fewer samples, and the slowest would fall further behind).
Positions handed out in addition by a salvage run as more inner batches of the same size. Inner batches are averaged over their
own samples; the inner learning rate follows the run's schedule over ``H`` inner steps a round
(``optim.schedule_steps`` rounds, ``lr_at``). The inner moments are this replica's own: a round that is dropped leaves them
advanced (they are never compared, and a newcomer copies its donor's).

Speculation (``replicas.outer.speculate``, ``replicas/speculating.py``): between a round's vote
and its verdict, ``speculate`` trains the next round's first inner batches from the start the
commit would give and holds them (``ahead``: the parameters and the moments they produced), the
model and the moments put back; the next ``compute`` takes them when they are its first inner
batches from the same start, bit for bit, and otherwise drops them (``speculated`` says which).
The cuts of a share into inner batches do not depend on its length (``inner_batches``), so a share
the leader resized at its end keeps them.

The delayed outer step (``replicas.outer.delay`` = ``delay``): a round's first ``delay`` inner
batches start from ``base()`` (this member's parameters at its last committed round's end) instead
of the round's start, and are then rebased on it (``_rebase``: start + (trained - base)); a
speculation of them (``speculate`` from ``base()`` with ``limit = delay``) is kept when its start is
``base()`` bit for bit. ``base()`` None (nothing committed yet, a heal): the round starts plainly.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from ...device import Device
from ..second_moment import NoiseCorrectedAdamW, noise_corrected_update
from ..step import apply_update, compute_gradients
from .shares import keep_reusable


@dataclass(slots=True)
class Ahead:
    """Round ``step``'s first ``done`` inner batches (``chunks``), trained speculatively
    (``LocalRound.speculate``) on a share of ``batch`` among ``sharers``, from the parameters ``start``."""

    step: int
    chunks: list[list[int]]  # the positions of each inner batch trained, in order
    batch: tuple[int, ...]
    sharers: int
    start: list[torch.Tensor]
    local: list[torch.Tensor]  # the parameters after them
    moments: dict  # the inner optimizer's state after them
    done: int
    loss_sum: float
    tokens: int
    seconds: float  # what they took to compute (they count in the round's compute time when kept)


def optimizer_state_copy(optimizer: torch.optim.Optimizer) -> defaultdict:
    """A copy of ``optimizer.state`` (tensors cloned) that can stand in for it."""
    return defaultdict(dict, {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()}
                              for p, st in optimizer.state.items()})


class LocalRound:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, inner_steps: int,
                 lr: Callable[[int], float], grad_clip: float):
        """``lr(i)``: the inner learning rate of inner step ``i`` (counted from 1 over the run)."""
        self.model, self.optimizer, self.inner_steps = model, optimizer, inner_steps
        self.lr, self.grad_clip = lr, grad_clip
        self.loads = None  # dense models only: no expert loads to sum
        # eager (``OuterRounds.eager_start``): moves the parameters at rest to where a round's inner
        # steps start, in place; ``origin`` then holds that start (None: the start is the rest)
        self.begin: Callable[[int, list[torch.Tensor]], None] | None = None
        self.ahead: Ahead | None = None  # a speculation waiting for its round (``speculate``)
        # the delayed outer step (``replicas.outer.delay``), (delay, base): a round's first ``delay``
        # inner batches start from ``base()`` (this member's parameters at its last committed round's
        # end; None: from the round's start) and are then rebased on the round's start (``_rebase``)
        self.delayed: tuple[int, Callable[[], list[torch.Tensor] | None]] | None = None
        # what became of the speculation the last ``compute`` found: (inner batches, seconds, kept)
        self.speculated: tuple[int, float, bool] | None = None
        self.drop()

    def drop(self) -> None:
        self.step: int | None = None
        self.held: list[int] = []
        self.chunks: list[tuple[int, ...]] = []
        self.loss_sum, self.tokens, self.inner_done, self.inner_size = 0.0, 0, 0, 1.0
        self.local: list[torch.Tensor] | None = None
        self.origin: list[torch.Tensor] | None = None
        self.speculated = None  # reported once, for the round whose compute found it (Replica.run_step)

    def compute(self, step: int, positions: Sequence[int], batch: Sequence[int],
                samples: Callable[[list[int]], torch.Tensor], micro_batch_size: int,
                device: Device, *, sharers: int) -> tuple[float, int, int]:
        """Train this member's share ``positions`` of round ``step`` (``batch``: the round's sample
        ids, shared by ``sharers`` members); returns the mean loss over its inner batches' samples,
        their tokens, and how many positions were reused from a discarded run of the same round.
        A speculation of this round (``ahead``) whose inner batches are the round's first ones (the
        same positions of the same batch, the same sharers) and whose start is the round's, bit for
        bit, is taken as them; any other is dropped (``speculated``)."""
        reused, todo = keep_reusable(self, step, positions)
        ahead, self.ahead = self.ahead, None
        self.speculated = (ahead.done, ahead.seconds, False) if ahead is not None else None
        if todo:
            params = list(self.model.parameters())
            start = [p.detach().clone() for p in params]
            first, rebase = 0, None
            if self.local is None:
                self.inner_size = max(1.0, len(batch) / (self.inner_steps * sharers))
                if self.begin is not None:
                    with torch.no_grad():
                        self.begin(step, params)
                        self.origin = [p.detach().clone() for p in params]
                base = self.delayed[1]() if self.delayed is not None else None
                origin = params if base is None else base  # where the round's first inner batches start
                if ahead is not None and ahead.step == step and ahead.batch == tuple(batch) and \
                        ahead.sharers == sharers and ahead.chunks == self.inner_batches(todo)[:ahead.done] and \
                        all(torch.equal(p, a) for p, a in zip(origin, ahead.start, strict=True)):
                    with torch.no_grad():
                        for p, v in zip(params, ahead.local, strict=True):
                            p.copy_(v)
                    self.optimizer.state = ahead.moments
                    first, self.inner_done = ahead.done, ahead.done
                    self.loss_sum, self.tokens = ahead.loss_sum, ahead.tokens
                    self.speculated = (ahead.done, ahead.seconds, True)
                elif base is not None:
                    with torch.no_grad():
                        for p, v in zip(params, base, strict=True):
                            p.copy_(v)
                if base is not None:
                    rebase = (min(self.delayed[0], len(self.inner_batches(todo))), start, base)
            else:
                with torch.no_grad():
                    for p, v in zip(params, self.local, strict=True):
                        p.copy_(v)
            for ids in self.inner_batches(todo)[first:]:
                if rebase is not None and self.inner_done == rebase[0]:
                    self._rebase(params, *rebase[1:])
                    rebase = None
                self.inner_done += 1
                loss, n = self._inner(step, [batch[p] for p in ids], samples, micro_batch_size, device,
                                      self.inner_done)
                self.loss_sum, self.tokens = self.loss_sum + loss, self.tokens + n
            if rebase is not None:  # the delay spans the whole share
                self._rebase(params, *rebase[1:])
            self.chunks.append(tuple(todo))
            with torch.no_grad():
                self.local = [p.detach().clone() for p in params]
                for p, s in zip(params, start, strict=True):
                    p.copy_(s)
        self.step, self.held = step, list(positions)
        return self.loss_sum / max(len(positions), 1), self.tokens, reused

    @property
    def kept_seconds(self) -> float:
        """Seconds the speculation the last ``compute`` took computed (0 when none was kept)."""
        return self.speculated[1] if self.speculated is not None and self.speculated[2] else 0.0

    def speculate(self, step: int, positions: Sequence[int], batch: Sequence[int],
                  samples: Callable[[list[int]], torch.Tensor], micro_batch_size: int, device: Device, *,
                  sharers: int, start: list[torch.Tensor], more: Callable[[], bool], limit: int | None = None) -> int:
        """Train round ``step``'s share ``positions`` (of ``batch``, ``sharers`` members) ahead, from
        ``start``: its first inner batch, then the next ones while ``more()`` holds (at most ``limit``
        in all: the delayed outer step's ``delay``), and hold them as
        ``ahead`` for ``compute``. ``start`` is handed over, kept as the speculation's start without a
        copy: the caller must not change it afterwards. Whatever happens (``more`` may raise), the model and the inner
        optimizer's state are left as they were (a commit applies to them, a checkpoint saves them).
        Returns the inner batches trained. Only between rounds: nothing of a round may be held."""
        self.ahead = None
        params = list(self.model.parameters())
        rest = [p.detach().clone() for p in params]
        moments = optimizer_state_copy(self.optimizer)
        size = self.inner_size
        self.inner_size = max(1.0, len(batch) / (self.inner_steps * sharers))
        chunks = self.inner_batches(list(positions))[:limit]
        t0, done, loss_sum, tokens = time.monotonic(), 0, 0.0, 0
        try:
            with torch.no_grad():
                for p, v in zip(params, start, strict=True):
                    p.copy_(v)
            while done < len(chunks) and (done == 0 or more()):
                loss, n = self._inner(step, [batch[p] for p in chunks[done]], samples, micro_batch_size, device,
                                      done + 1)
                done, loss_sum, tokens = done + 1, loss_sum + loss, tokens + n
            self.ahead = Ahead(step=step, chunks=chunks[:done], batch=tuple(batch), sharers=sharers,
                               start=start, local=[p.detach().clone() for p in params],
                               moments=self.optimizer.state, done=done, loss_sum=loss_sum, tokens=tokens,
                               seconds=time.monotonic() - t0)
        finally:
            with torch.no_grad():
                for p, v in zip(params, rest, strict=True):
                    p.copy_(v)
            self.optimizer.state, self.inner_size = moments, size
        return done

    @staticmethod
    def _rebase(params: list[torch.Tensor], start: list[torch.Tensor], base: list[torch.Tensor]) -> None:
        """The delayed outer step lands: ``params`` (trained from ``base``, this member's own
        parameters at its last round's end) become ``start + (params - base)``, ``start`` the
        round's start (the new global parameters). In place."""
        with torch.no_grad():
            for p, s, b in zip(params, start, base, strict=True):
                p.copy_(s + (p - b))

    def inner_batches(self, todo: list[int]) -> list[list[int]]:
        """``todo`` cut into ``round(len(todo) / inner_size)`` contiguous inner batches, the ``i``-th
        starting at ``round(i x inner_size)``: the cuts do not depend on ``len(todo)``, so a share that
        grew or shrank at its end keeps its first inner batches (a speculation's, ``compute``); the
        last one holds the rest (half to one and a half inner batches)."""
        runs = min(max(1, round(len(todo) / self.inner_size)), len(todo))
        cuts = [min(round(i * self.inner_size), len(todo)) for i in range(runs)] + [len(todo)]
        return [todo[a:b] for a, b in pairwise(cuts) if b > a]

    def _inner(self, step: int, ids: list[int], samples: Callable[[list[int]], torch.Tensor], micro_batch_size: int,
               device: Device, count: int) -> tuple[float, int]:
        """The ``count``-th inner AdamW step of round ``step``, on samples ``ids``; returns the loss
        summed over its samples and its tokens."""
        index = (step - 1) * self.inner_steps + min(count, self.inner_steps)
        if isinstance(self.optimizer, NoiseCorrectedAdamW) and len(ids) >= 2:  # two halves (second_moment.py)
            half = len(ids) // 2
            loss_a, tokens_a = compute_gradients(self.model, samples(ids[:half]), micro_batch_size, len(ids), device,
                                                 step=step)
            self.optimizer.mark_half(half, len(ids))
            loss_b, tokens_b = compute_gradients(self.model, samples(ids[half:]), micro_batch_size, len(ids), device,
                                                 step=step)
            noise_corrected_update(self.model, self.optimizer, self.lr(index), self.grad_clip)
            return loss_a * half + loss_b * (len(ids) - half), tokens_a + tokens_b
        loss, tokens = compute_gradients(self.model, samples(ids), micro_batch_size, len(ids), device, step=step)
        apply_update(self.model, self.optimizer, self.lr(index), self.grad_clip)
        return loss * len(ids), tokens
