"""Vote checks: fields other modules add to a member's vote, and the leader's judgement of them.

A seam for the numeric-fault work (finite flags, loss and gradient norms, state fingerprints ride
on the vote): a check measures something on each member after its reduce and puts it in
``Vote.checks[name]`` (JSON values); the leader, once every member voted, asks each check to judge
all votes and commits the step only if every vote is ok and no check objects. The objection is the
``step_discarded`` reason; members redo the step as after any discarded step.

Contract of a check (``replicas.vote_checks`` names them, from ``CHECKS``):
- ``measure(trainer, flat) -> value``: on the member, after the reduce (``flat``: the reduced
  contribution, ``apply.contribution``: the gradients, then a mixture of experts' loads); cheap, no communication;
- ``judge(votes) -> str | None``: on the leader, ``votes`` by replica id; a reason to discard the
  step, or None.
The vote's own ``ok`` (the reduce, and a newcomer's heal, succeeded) is the check every step has;
no other check is configured by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch

from .protocol import Vote


class VoteCheck(Protocol):
    name: str

    def measure(self, trainer: Any, flat: torch.Tensor) -> Any: ...

    def judge(self, votes: Mapping[int, Vote]) -> str | None: ...


CHECKS: dict[str, Callable[[], VoteCheck]] = {}


def build(names: Sequence[str]) -> list[VoteCheck]:
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"replicas.vote_checks = {list(names)}: unknown {unknown}; known: {sorted(CHECKS) or 'none'}")
    return [CHECKS[n]() for n in names]


def measure_all(checks: Sequence[VoteCheck], trainer: Any, flat: torch.Tensor) -> dict[str, Any]:
    return {c.name: c.measure(trainer, flat) for c in checks}


def objection(checks: Sequence[VoteCheck], votes: Mapping[int, Vote]) -> str | None:
    """The first reason a check gives to discard the step, or None."""
    for c in checks:
        why = c.judge(votes)
        if why:
            return f"vote check {c.name}: {why}"
    return None
