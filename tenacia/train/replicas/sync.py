"""The sync strategy: what a step reduces over the quorum, and what the reduced value does.

The replica's step asks its strategy, never decides itself (``docs/sync.md``):
- ``EveryStep`` (``replicas.sync = "ddp"``, also ``"every_step"``, its old name): every step, each
  member contributes its flat gradients and, for a mixture-of-experts model, its share's expert
  loads (``apply.contribution``; zeros for a newcomer), the quorum sums them with one all-reduce,
  and on commit the sum is applied as the step's gradient (``apply.apply_step``);
- ``OuterRounds`` (``"diloco"``, ``"streaming"``, ``diloco.py``): a step is an outer round of
  inner AdamW steps; the quorum averages pseudo-gradients, weighted by tokens, and the commit
  applies an outer Nesterov step.

Contract of a strategy, per step (``Replica.run_step``):
- ``local(trainer)``: the holder of this member's share of the step in flight (``LocalGradients``
  or ``LocalRound``: ``compute``, ``drop``, ``chunks``, ``loads``), made once per replica;
- ``contribution(trainer, grads, step)``: this member's tensor for the reduce, after its share
  (``grads``) was computed; ``grad_part(flat)``: the part of it (or of the reduced value) whose
  norm the numeric checks take;
- ``overlaps``: whether the step's contribution is built before its compute and reduced beside it
  (``sent(trainer, step, sharing)`` builds it then; ``overlap.py`` runs it; streaming's overlap);
- ``reduce(flat, group, wait, wake, step)``: combine it over the quorum in place; ``wait(done)``
  sleeps the training thread on its inbox until ``done()`` (a newer quorum interrupts it),
  ``wake`` is to be called when the collective completes or fails; raises when a peer died
  mid-collective;
- ``apply(trainer, grads, pending, cfg)``: apply the reduced value of a committed step (on the
  leader's word only, ``apply.py``);
- ``replicated(trainer)``: the named tensors every replica holds alike after a commit (the final
  state fingerprint covers them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from ... import checkpoint as ckpt
from ..config import SYNC_ALIASES, RunConfig
from ..trainer import Trainer
from .apply import PendingStep, apply_step, contribution, gradient_numel
from .diloco import OuterRounds
from .group import Wait, collect
from .shares import LocalGradients


class SyncStrategy(Protocol):
    name: str
    overlaps: bool

    def local(self, trainer: Trainer) -> Any: ...

    def contribution(self, trainer: Trainer, grads: Any, step: int) -> torch.Tensor: ...

    def grad_part(self, flat: torch.Tensor) -> torch.Tensor: ...

    def reduce(self, flat: torch.Tensor, group: Any, wait: Wait, wake: Callable[..., None], step: int) -> None: ...

    def apply(self, trainer: Trainer, grads: Any, pending: PendingStep, cfg: RunConfig) -> None: ...

    def replicated(self, trainer: Trainer) -> list[dict[str, torch.Tensor]]: ...


class EveryStep:
    """Average every step: synchronous data parallelism (module docstring)."""

    name = "ddp"
    overlaps = False

    def __init__(self, cfg: RunConfig | None = None, trainer: Trainer | None = None):
        self.n_grads = gradient_numel(trainer.model) if trainer is not None else None

    def local(self, trainer: Trainer) -> LocalGradients:
        return LocalGradients(trainer.model)

    def contribution(self, trainer: Trainer, grads: LocalGradients, step: int) -> torch.Tensor:
        return contribution(trainer.model, grads)

    def grad_part(self, flat: torch.Tensor) -> torch.Tensor:
        """The gradients, without a mixture of experts' loads after them."""
        return flat[:self.n_grads]

    def reduce(self, flat: torch.Tensor, group: Any, wait: Wait, wake: Callable[..., None], step: int = 0) -> None:
        collect(group.allreduce([flat]), wait, wake)

    def apply(self, trainer: Trainer, grads: LocalGradients, pending: PendingStep, cfg: RunConfig) -> None:
        apply_step(trainer, grads, pending, cfg)

    def replicated(self, trainer: Trainer) -> list[dict[str, torch.Tensor]]:
        """Weights and AdamW moments: every replica applies the same step to the same state."""
        return [ckpt.model_tensors(trainer.model), ckpt.optimizer_tensors(trainer.model, trainer.optimizer)]


STRATEGIES: dict[str, Callable[[RunConfig, Trainer], SyncStrategy]] = {
    "ddp": EveryStep, "diloco": OuterRounds, "streaming": OuterRounds}


def strategy(cfg: RunConfig, trainer: Trainer) -> SyncStrategy:
    """The strategy ``replicas.sync`` names (an old name by the one it stands for)."""
    name = cfg.replicas.sync
    return STRATEGIES[SYNC_ALIASES.get(name, name)](cfg, trainer)
