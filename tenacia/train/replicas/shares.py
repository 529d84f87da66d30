"""Which samples of a step's global batch each member of a quorum computes gradients for.

A *share* is a list of positions in the step's global batch (``0 .. batch-1``); the sampler gives
every replica the same batch for a step, so positions name the same samples everywhere. The
shares of a quorum's sharers partition the batch: every position is computed exactly once.

- ``even_shares``: contiguous shares whose sizes differ by at most one (every normal step).
- ``salvage_shares``: the step in flight was discarded because a member was lost, and the next
  quorum runs the *same* step. A survivor that already computed its share keeps it (its gradients
  are those of the same samples on the same committed weights); only the positions of the lost
  members are computed again, spread over the new sharers, fewest positions first. A survivor
  that had not computed its share yet simply computes all of it: the plan is correct whatever each
  member holds, and members never need to report what they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ...data.sampler import shard
from ...device import Device
from ..step import compute_gradients, take_expert_loads

Shares = dict[int, tuple[int, ...]]  # replica id -> positions in the global batch


def even_shares(sharers: Sequence[int], batch: int) -> Shares:
    return {r: tuple(shard(range(batch), i, len(sharers))) for i, r in enumerate(sharers)}


def salvage_shares(previous: Shares, sharers: Sequence[int], batch: int) -> Shares:
    """Shares for re-running a discarded step: ``previous`` shares kept where their member is
    still a sharer, the rest of the batch spread over ``sharers``, least loaded first (ties by
    rank order)."""
    out = {r: list(previous.get(r, ())) for r in sharers}
    covered = {p for share in out.values() for p in share}
    for pos in (p for p in range(batch) if p not in covered):
        min(out.values(), key=len).append(pos)
    return {r: tuple(sorted(share)) for r, share in out.items()}


def keep_reusable(held_by, step: int, positions: Sequence[int]) -> tuple[int, list[int]]:
    """What of ``positions`` a holder (``LocalGradients``, ``LocalRound``: ``step``, ``held``,
    ``drop()``) computed already for ``step`` and may reuse: all it holds if they are among
    ``positions``, else nothing (it drops them). Returns (positions reused, positions to compute)."""
    held = set(held_by.held)
    if held_by.step != step or not held <= set(positions) or not positions:
        held_by.drop()
        held = set()
    return len(held), [p for p in positions if p not in held]


class LocalGradients:
    """The gradients this member computed for a step, kept in the parameters' ``.grad`` (the
    all-reduce works on a flat copy) until the step is applied or dropped, so that a re-run of the
    same step computes only the positions it does not hold yet.

    Invariant: every ``.grad`` is None, or holds sum(per-sample loss)/batch over exactly the
    positions ``held`` names for step ``step``, computed on the weights committed at ``step - 1``,
    by one call per entry of ``chunks`` in that order (a re-execution replays them: the same calls
    give the same bits). Whoever changes the weights or the gradients otherwise calls ``drop``.

    A mixture-of-experts model's expert loads are kept alike: ``loads`` (MoE layers, experts) is
    None or the tokens each expert received over exactly the ``held`` positions, each counted
    once (taken from the model's counters around each call, so forwards of audits, rechecks or
    evals between calls never reach it).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.step: int | None = None
        self.held: list[int] = []
        self.chunks: list[tuple[int, ...]] = []
        self.loss_sum, self.tokens = 0.0, 0
        self.loads: torch.Tensor | None = None

    def drop(self) -> None:
        self.model.zero_grad(set_to_none=True)
        self.step, self.held, self.chunks, self.loss_sum, self.tokens = None, [], [], 0.0, 0
        self.loads = None

    def compute(self, step: int, positions: Sequence[int], batch: Sequence[int], samples: Callable[[list[int]], torch.Tensor],
                micro_batch_size: int, device: Device, *, sharers: int = 1) -> tuple[float, int, int]:
        """Gradients over ``positions`` of ``batch`` (the step's sample ids); returns the mean loss
        over them, their tokens, and how many positions were reused rather than computed.
        ``sharers`` is ``LocalRound``'s (its inner batch size); a step's gradients are one batch."""
        reused, todo = keep_reusable(self, step, positions)
        if todo:
            take_expert_loads(self.model)  # counts of forwards outside any share are not this share's
            loss, tokens = compute_gradients(self.model, samples([batch[p] for p in todo]), micro_batch_size,
                                             len(batch), device, step=step)
            self.loss_sum += loss * len(todo)
            self.tokens += tokens
            self.chunks.append(tuple(todo))
            loads = take_expert_loads(self.model)
            if loads is not None:
                self.loads = loads if self.loads is None else self.loads + loads
        self.step, self.held = step, list(positions)
        return self.loss_sum / max(len(positions), 1), self.tokens, reused
