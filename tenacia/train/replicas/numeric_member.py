"""A member's side of the numeric checks (``numerics/judge.py`` holds the contract): what it
measures for its vote, the peers' shares it audits, and how it re-executes a share bit for bit.

Determinism is what every verdict rests on: the same share (the same positions, computed in the
same chunks of calls) from the same state with the same one-thread kernels gives the same bits, on
this replica or on any other (``tests/train/numerics/test_determinism.py`` proves it on the machine
the suite runs on). ``LocalGradients.chunks`` records the calls that made a member's gradients, so
a re-execution replays exactly those. Values pass the ``hooks.tamper`` sites on the way, on
re-execution too: a chip that computes wrong numbers every time does so when asked again.

Under diloco and streaming (``replay`` False) replicas hold different parameters and inner moments
between commits, so no peer can recompute another's share: no audits are made, the state
fingerprint covers the replicated state only (global parameters and outer momenta,
``outer.OuterState``), and the finite flags and spike statistics are taken on the pseudo-gradient
(the leader's judge then skips a suspect round instead of asking for a re-execution).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ... import hooks
from ..config import NumericsConfig
from ..numerics.fingerprint import StateFingerprint, fingerprint, persistent_buffers
from ..trainer import Trainer
from .apply import contribution, gradient_numel
from .protocol import Quorum, Recheck, Rechecked
from .shares import LocalGradients


def norm(flat: torch.Tensor) -> float:
    """The L2 norm, in the gradients' own float32 (a float64 copy costs 13x more on CPU): an element
    above 1e19 makes it infinite, which the judge takes as a non-finite value, a trigger like any."""
    return float(torch.linalg.vector_norm(flat))


def audit_plan(step: int, sharers: Sequence[int], watch: Mapping[int, int], p: float, seed: int) -> dict[int, int]:
    """Which shares are recomputed by which peer at ``step``: audited replica -> auditor. Watched
    replicas (until their step) every step, by the next sharer; and with probability ``p`` one
    sharer drawn by the seed, by another drawn likewise. The same on every member."""
    ring = sorted(sharers)
    if len(ring) < 2:
        return {}
    plan = {r: ring[(ring.index(r) + 1) % len(ring)] for r in sorted(watch) if r in ring and watch[r] >= step}
    rng = random.Random(seed * 1_000_003 + step)
    if p > 0 and rng.random() < p:
        target = rng.choice(ring)
        plan.setdefault(target, ring[(ring.index(target) + 1 + rng.randrange(len(ring) - 1)) % len(ring)])
    return plan


class NumericMember:
    """The numeric side of one replica's steps (``Replica`` calls it at each phase)."""

    def __init__(self, cfg: NumericsConfig, trainer: Trainer, grads: LocalGradients, micro_batch_size: int,
                 grad_part: Callable[[torch.Tensor], torch.Tensor] | None = None, replay: bool = True):
        """``grad_part(flat)``: the part of a contribution whose norm is taken (the sync strategy's;
        default: the gradients, without a mixture of experts' loads after them);
        ``replay``: whether a peer can recompute a share bit for bit (module docstring)."""
        self.cfg, self.trainer, self.grads, self.mbs = cfg, trainer, grads, micro_batch_size
        n_grads = gradient_numel(trainer.model)
        self.grad_part, self.replay = grad_part or (lambda flat: flat[:n_grads]), replay
        self.committed: str | None = None  # state fingerprint right after the last commit, heal or load
        outer = getattr(trainer, "outer", None)  # a stand-in trainer of a test may have none
        if outer is None:
            self.state: Callable[[], str] = StateFingerprint(trainer.model, trainer.optimizer)
        else:
            buffers = persistent_buffers(trainer.model)
            self.state = lambda: fingerprint([*outer.fingerprint_tensors(), *buffers])

    def settle(self, members: int | None = None) -> None:
        """The state just changed legitimately (a commit, a heal, a resume) in a quorum of
        ``members`` (None: not known): remember its fingerprint, to find a change at rest at the
        next vote. Three members or more need none: a state that changed at rest differs from the
        majority's there, and one fingerprint pass a step is half the cost."""
        small = members is None or members < 3
        self.committed = self.state() if self.cfg.check and small else None

    def at_rest(self, step: int) -> None:
        """The state as it starts ``step``: passed to the ``params`` and ``moments`` tamper sites (not
        on a member healing in this step: its state is about to be replaced, a corruption there
        would be erased before anything could see it, and a ``once`` fault waits for the next step)."""
        if hooks.tampering():
            t = self.trainer
            hooks.tamper("params", step, [p.data for p in t.model.parameters()])
            hooks.tamper("moments", step, [v for s in t.optimizer.state.values() for k, v in sorted(s.items())
                                           if k != "step" and isinstance(v, torch.Tensor)])

    @staticmethod
    def tampered(step: int, flat: torch.Tensor, loss: float) -> tuple[torch.Tensor, float]:
        """A share's contribution and loss through the ``local_grads`` and ``loss`` tamper sites
        (whether or not checks run: a faulty chip does not ask)."""
        return hooks.tamper("local_grads", step, flat), hooks.tamper("loss", step, loss)

    def outcome(self, step: int, flat: torch.Tensor, loss: float) -> tuple[torch.Tensor, dict[str, Any]]:
        """A share's contribution (tampered) and its outcome (``judge.Outcome``): the fingerprint
        covers the whole contribution, the norm its gradients only."""
        flat, loss = self.tampered(step, flat, loss)
        return flat, {**self.measure(flat), "loss": float(loss)}

    def measure(self, flat: torch.Tensor) -> dict[str, Any]:
        """The fingerprint of a whole contribution and the norm of its gradients (of an outcome)."""
        return {"grad": fingerprint([flat]), "gnorm": norm(self.grad_part(flat))}

    def recompute(self, step: int, chunks: Sequence[Sequence[int]], own: bool) -> dict[str, Any]:
        """Re-execute the share made of ``chunks`` (positions in the step's batch) from the current
        state. ``own``: this member's share, recomputed into its own gradients (they replace the
        ones it held: a transient fault is gone from its share for the redo); otherwise a peer's,
        computed aside, this member's gradients left as they were."""
        t = self.trainer
        model = t.model
        kept = None if own else [p.grad for p in model.parameters()]
        target = self.grads if own else LocalGradients(model)
        target.drop()
        batch = t.sampler.peek(t.cfg.train.batch_size)
        positions: list[int] = []
        loss = float("nan")
        for chunk in chunks:
            positions = sorted([*positions, *chunk])
            loss, _, _ = target.compute(step, positions, batch, t.data.train.get, self.mbs, t.device)
        _, result = self.outcome(step, contribution(model, target), loss)
        if kept is not None:
            for p, g in zip(model.parameters(), kept, strict=True):
                p.grad = g
        return result

    def audits(self, q: Quorum, watch: Mapping[int, int], me: int) -> list[dict[str, Any]]:
        """Recompute the peers' shares this member audits at ``q.step`` (normal steps only: every
        sharer then computed its share in one call from the same state)."""
        if q.heal or q.resolve is not None or not self.cfg.check or not self.replay:
            return []
        plan = audit_plan(q.step, q.sharers, watch, self.cfg.audit_p, self.cfg.seed)
        return [{"of": r, **self.recompute(q.step, [q.shares[r]], own=False)}
                for r, auditor in sorted(plan.items()) if auditor == me]

    def report(self, own: dict[str, Any] | None, reduced: torch.Tensor, step: int,
               audits: list[dict[str, Any]]) -> dict[str, Any]:
        """This member's numeric vote (``judge.Report``; ``reduced`` has passed its tamper site),
        through the ``vote`` tamper site."""
        state = self.state()
        report = {"own": own, "rnorm": norm(self.grad_part(reduced)), "reduced": fingerprint([reduced]), "state": state,
                  "rest_ok": self.committed is None or state == self.committed,
                  "chunks": [list(c) for c in self.grads.chunks] if own else [], "audits": audits}
        return hooks.tamper("vote", step, report)

    def answer(self, msg: Recheck, me: int) -> Rechecked:
        """Re-execute the suspect's share as the leader asked (as the suspect or as the peer)."""
        result = self.recompute(msg.step, msg.chunks, own=msg.share_of == me)
        return Rechecked(replica=me, quorum_id=msg.quorum_id, step=msg.step, suspect=msg.suspect, outcome=result)
