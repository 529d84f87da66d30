"""A member's part of an outer round in flight (diloco, streaming): its inner steps, kept until the round is decided.

The counterpart of ``shares.LocalGradients`` for the low-communication strategies: a share is a
run of the round's batch, trained as inner AdamW steps on this replica's own parameters and
optimizer. Kept aside so that a round discarded because a peer was lost, and redone by the next
quorum with the same share (``shares.salvage_shares``), reuses what this member trained and only
trains the positions handed to it in addition, continuing from where it stopped.

Invariant: outside ``compute`` the model holds this replica's parameters as they were when the
round started (what a donor offers, what a checkpoint saves). ``local`` is None, or holds the
parameters after inner steps over exactly the positions ``held`` names for round ``step``,
trained by one inner-step run per entry of ``chunks`` in that order, from the round's start.
``drop`` forgets it (the model already holds the start); ``compute`` is the only writer. With a
``begin`` (the eager outer step) the inner steps start where ``begin`` moves the parameters at rest,
and ``origin`` holds that start while ``local`` is held.

Inner steps. The round's ``inner_steps x train.batch_size`` samples are shared by the quorum's
sharers; an inner batch holds what an even share puts in each of H (``inner_steps``) steps,
``len(batch) / (H x sharers)`` samples, and a share is trained as ``round(len(share) / that)``
contiguous inner batches of near-equal size (``shard``). With even shares every replica runs H inner
steps per round whatever the quorum's size; with shares sized to measured speeds (``speed.py``) a
faster replica runs more inner steps of the same size, a slower one fewer: every inner step then
costs what a solo run's does (a share cut into H smaller batches would pay the per-step cost of the
optimizer and of Python H times on fewer samples, and the slowest would fall further behind).
Positions handed out in addition by a salvage run as more inner batches of the same size. Inner batches are averaged over their
own samples; the inner learning rate follows the run's schedule over ``H`` inner steps a round
(``optim.schedule_steps`` rounds, ``lr_at``). The inner moments are this replica's own: a round that is dropped leaves them
advanced (they are never compared, and a newcomer copies its donor's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ...data.sampler import shard
from ...device import Device
from ..step import apply_update, compute_gradients
from .shares import keep_reusable


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
        self.drop()

    def drop(self) -> None:
        self.step: int | None = None
        self.held: list[int] = []
        self.chunks: list[tuple[int, ...]] = []
        self.loss_sum, self.tokens, self.inner_done, self.inner_size = 0.0, 0, 0, 1.0
        self.local: list[torch.Tensor] | None = None
        self.origin: list[torch.Tensor] | None = None

    def compute(self, step: int, positions: Sequence[int], batch: Sequence[int],
                samples: Callable[[list[int]], torch.Tensor], micro_batch_size: int,
                device: Device, *, sharers: int) -> tuple[float, int, int]:
        """Train this member's share ``positions`` of round ``step`` (``batch``: the round's sample
        ids, shared by ``sharers`` members); returns the mean loss over its inner batches' samples,
        their tokens, and how many positions were reused from a discarded run of the same round."""
        reused, todo = keep_reusable(self, step, positions)
        if todo:
            params = list(self.model.parameters())
            start = [p.detach().clone() for p in params]
            if self.local is None:
                self.inner_size = max(1.0, len(batch) / (self.inner_steps * sharers))
                if self.begin is not None:
                    with torch.no_grad():
                        self.begin(step, params)
                        self.origin = [p.detach().clone() for p in params]
            runs = max(1, round(len(todo) / self.inner_size))
            if self.local is not None:
                with torch.no_grad():
                    for p, v in zip(params, self.local, strict=True):
                        p.copy_(v)
            for i in range(min(runs, len(todo))):
                ids = [batch[p] for p in shard(todo, i, min(runs, len(todo)))]
                loss, tokens = compute_gradients(self.model, samples(ids), micro_batch_size, len(ids), device, step=step)
                self.inner_done += 1
                index = (step - 1) * self.inner_steps + min(self.inner_done, self.inner_steps)
                apply_update(self.model, self.optimizer, self.lr(index), self.grad_clip)
                self.loss_sum += loss * len(ids)
                self.tokens += tokens
            self.chunks.append(tuple(todo))
            with torch.no_grad():
                self.local = [p.detach().clone() for p in params]
                for p, s in zip(params, start, strict=True):
                    p.copy_(s)
        self.step, self.held = step, list(positions)
        return self.loss_sum / max(len(positions), 1), self.tokens, reused
