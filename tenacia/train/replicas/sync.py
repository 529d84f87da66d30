"""The sync strategy: what a step reduces over the quorum, and what the reduced value does.

A seam for the low-communication strategies (DiLoCo and its family reduce parameter deltas every
H steps and apply an outer optimizer step): the replica's step asks its strategy, never decides
itself. One implementation today, ``EveryStep`` (``replicas.sync = "every_step"``): every step,
each member contributes its flat gradients and, for a mixture-of-experts model, its share's
expert loads (``apply.contribution``; zeros for a newcomer), the quorum sums them with one
all-reduce, and on commit the sum is applied as the step's gradient (``apply.apply_step``).

Contract of a strategy, per step (``Replica.run_step``):
- ``contribution(trainer, grads)``: this member's tensor for the reduce, after its share
  (``grads``) was computed;
- ``reduce(flat, group, wait, wake)``: combine it over the quorum in place; ``wait(done)`` sleeps
  the training thread on its inbox until ``done()`` (a newer quorum interrupts it), ``wake`` is to
  be called when the collective completes or fails; raises when a peer died mid-collective;
- ``apply(trainer, grads, pending, cfg)``: apply the reduced value of a committed step (on the
  leader's word only, ``apply.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from ..config import RunConfig
from ..trainer import Trainer
from .apply import PendingStep, apply_step, contribution
from .shares import LocalGradients


class SyncStrategy(Protocol):
    name: str

    def contribution(self, trainer: Trainer, grads: LocalGradients) -> torch.Tensor: ...

    def reduce(self, flat: torch.Tensor, group: Any, wait: Callable[[Callable[[], bool]], None],
               wake: Callable[..., None]) -> None: ...

    def apply(self, trainer: Trainer, grads: LocalGradients, pending: PendingStep, cfg: RunConfig) -> None: ...


class EveryStep:
    """Average every step: today's synchronous data parallelism (module docstring)."""

    name = "every_step"

    def contribution(self, trainer: Trainer, grads: LocalGradients) -> torch.Tensor:
        return contribution(trainer.model, grads)

    def reduce(self, flat: torch.Tensor, group: Any, wait: Callable[[Callable[[], bool]], None],
               wake: Callable[..., None]) -> None:
        work = group.allreduce([flat])
        # the future completes (and runs its callbacks) just before the work marks itself
        # completed: wait on the future, or the wake finds the work not done yet
        done = work.get_future()
        done.add_done_callback(wake)  # also on error: a peer died mid-collective
        wait(done.done)
        work.wait()

    def apply(self, trainer: Trainer, grads: LocalGradients, pending: PendingStep, cfg: RunConfig) -> None:
        apply_step(trainer, grads, pending, cfg)


STRATEGIES: dict[str, Callable[[], SyncStrategy]] = {"every_step": EveryStep}


def strategy(name: str) -> SyncStrategy:
    return STRATEGIES[name]()
