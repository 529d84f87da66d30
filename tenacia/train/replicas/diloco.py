"""DiLoCo and Streaming DiLoCo as a sync strategy: a protocol step is one outer round (``docs/sync.md``).

A round of quorum ``q`` (``Replica.run_step``; the leader's shares, votes and commit are those of
every step):
- compute: each sharer trains its share of the round's batch (``inner_steps x train.batch_size``
  samples) as inner AdamW steps from its parameters at the round's start (``local_round.py``);
- ``contribution``: the pseudo-gradient of the round's fragment, global minus local parameters,
  then the tokens this member trained (zeros and 0 for a member without a share: a newcomer);
- ``reduce``: token-weighted sum over the quorum: ``[sum_i t_i d_i, sum_i t_i]``. fp32: one
  all-reduce of ``[t d, t]``; quantized or top-k (``compress.py``): each member compresses ``d``
  with its error-feedback residual, and the payloads are all-gathered and summed by every member
  or reduce-scattered, summed per chunk, re-quantized and all-gathered (``replicas.outer.exchange``,
  ``compressed_reduce.py``: seams, ``Gather`` and ``AllToAll``, that both transports serve), the
  same bits everywhere;
- ``apply`` (on commit only): the outer Nesterov step on the fragment's global parameters with
  ``sum_i t_i d_i / sum_i t_i`` (``outer.OuterState``); the fragment's local parameters become the
  new global ones, the other fragments keep what this member trained (diloco has one fragment:
  every replica leaves the round holding the global parameters); the error-feedback residual of
  the round is kept; the round's batch is committed (sampler, ledger: every sample once).
A member lost mid-round contributes nothing: the round is discarded and redone by the survivors,
who keep what they trained (salvage) and train the lost member's positions in addition; its
samples are recorded once, when a round that trained them commits.

Streaming: the parameters are cut into ``fragments`` (F) contiguous groups; round ``r`` syncs
fragment ``(r - 1) mod F``, so each round sends 1/F of the model and each fragment is synced every
F rounds.

Streaming's overlap (``replicas.outer.overlap``, ``overlaps``): round ``r``'s exchange carries
its fragment as this member holds it at rest, when the round starts (``sent``: global minus the
parameters the previous rounds left, weighted by the tokens of this member's last committed round,
``OuterState.trained_tokens``; zeros and 0 for a member healing in the round), so it is built
before the inner steps and reduced beside them (``overlap.py``); the vote waits for it. On commit
the outer step lands on that fragment one round late: its global parameters take the step, and
its local ones, which trained on through the round, are mixed with them as Streaming DiLoCo does:
``mix x local + (1 - mix) x global`` (``replicas.outer.mix``, its alpha, 0.5); the other fragments
keep the round's local parameters. Under ``replicas.outer.eager`` (in place of the mix) the
fragment at rest is the global parameters less this member's own progress of its last round, so
that ``sent`` carries that progress; the inner steps start where the outer step that progress
would make lands (``eager_start``: the average's stand-in, Kale et al. 2025), and on commit the
rest becomes the new global less the round's own progress (``LocalRound.origin`` to ``local``).
Under diloco's ``replicas.outer.delay`` the step lands a few inner steps late instead:
each member's next round starts from its own end of the round (``OuterState.round_end``, kept on
commit) and is rebased on the new global parameters ``delay`` inner batches in (``local_round.py``).
Streaming DiLoCo's delay is a few inner steps; streaming's overlap here is a
whole round (the commit protocol applies a step only on the leader's verdict, after every
member's reduce). Nothing is in flight between rounds: a checkpoint, written after a commit, holds
all a resume needs (with this member's ``trained_tokens`` and error-feedback residuals,
``OuterState``), so a resumed round sends the same bits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from ... import hooks
from ..config import RunConfig
from ..outer import OuterState
from ..step import lr_at
from ..trainer import Trainer
from .apply import PendingStep
from .compress import Compressor
from .compressed_reduce import AllToAll, Gather, all_gather_compressed, reduce_scatter_compressed
from .group import Wait, all_to_all, collect, gloo_all_gather
from .local_round import LocalRound


class OuterRounds:
    """The diloco and streaming strategies (module docstring)."""

    def __init__(self, cfg: RunConfig, trainer: Trainer, gather: Gather = gloo_all_gather,
                 exchange: AllToAll = all_to_all):
        o, self.cfg, self.gather, self.all_to_all = cfg.replicas.outer, cfg, gather, exchange
        self.scatters = o.exchange == "reduce_scatter"
        self.name = cfg.replicas.sync
        self.overlaps, self.mix = self.name == "streaming" and o.overlap, o.mix
        self.eager = self.overlaps and o.eager
        self.outer = trainer.outer
        self.compressor = Compressor(o.quantize, o.block, o.topk, o.error_feedback)
        self.pending_residual: tuple[int, int, torch.Tensor] | None = None  # (step, fragment, residual)
        opt = cfg.optim
        inner_total = opt.schedule_steps(cfg.train.steps) * o.inner_steps

        def lr(i: int) -> float:
            return lr_at(i, lr=opt.lr, warmup_steps=opt.warmup_steps, total_steps=inner_total,
                         min_lr_ratio=opt.min_lr_ratio)

        self.local_round = LocalRound(trainer.model, trainer.optimizer, o.inner_steps, lr, opt.grad_clip)
        if self.eager:
            self.local_round.begin = self.eager_start
        self.delay = o.delay
        if self.delay:
            self.local_round.delayed = (self.delay, lambda: self.outer.round_end)

    def local(self, trainer: Trainer) -> LocalRound:
        return self.local_round

    def fragment(self, step: int) -> int:
        return (step - 1) % len(self.outer.fragments)

    def contribution(self, trainer: Trainer, grads: LocalRound, step: int) -> torch.Tensor:
        """``[d, t]``: round ``step``'s fragment's pseudo-gradient (global minus local) and the tokens."""
        ids = self.outer.fragments[self.fragment(step)]
        if grads.local is None or grads.step != step:
            return torch.zeros(self.outer.fragment_size(self.fragment(step)) + 1, dtype=torch.float32,
                               device=self.outer.params[0].device)
        parts = [(self.outer.params[i] - grads.local[i]).reshape(-1) for i in ids]
        return torch.cat([*parts, torch.tensor([float(grads.tokens)], device=parts[0].device)])

    def sent(self, trainer: Trainer, step: int, sharing: bool) -> torch.Tensor:
        """Under overlap: ``[d, t]`` of round ``step``'s fragment as this member holds it at rest
        (the round's start) and the tokens of its last committed round; zeros when not
        ``sharing`` (a member healing in the round). A new tensor: the inner steps may run at once."""
        ids = self.outer.fragments[self.fragment(step)]
        params = list(trainer.model.parameters())
        if not sharing:
            return torch.zeros(self.outer.fragment_size(self.fragment(step)) + 1, dtype=torch.float32,
                               device=self.outer.params[0].device)
        with torch.no_grad():
            parts = [(self.outer.params[i] - params[i]).reshape(-1) for i in ids]
            tokens = torch.tensor([float(self.outer.trained_tokens)], device=parts[0].device)
            return torch.cat([*parts, tokens])

    def eager_start(self, step: int, params: list[torch.Tensor], outer: OuterState | None = None) -> None:
        """Eager: round ``step``'s fragment moves from rest (global less this member's progress ``d``
        not yet averaged, which the round's exchange carries) to the global parameters after the outer
        step ``d`` would make as the average's stand-in (Nesterov on a copy of the momentum, as
        ``OuterState.step`` does); the other fragments stay at rest. In place, no grad. ``outer``:
        the outer state to read (default this member's; a speculation passes its predicted one)."""
        o = outer or self.outer
        group = o.optimizer.param_groups[0]
        lr, mu = group["lr"], group["momentum"]
        for i in o.fragments[self.fragment(step)]:
            g = o.params[i]
            d = g - params[i]
            buf = o.optimizer.state.get(g, {}).get("momentum_buffer")
            b = d if buf is None else buf * mu + d
            params[i].copy_(g - lr * (d + mu * b if group["nesterov"] else b))

    def start_after(self, trainer: Trainer, grads: LocalRound, pending: PendingStep) -> list[torch.Tensor]:
        """Where round ``pending.step + 1``'s inner steps start if ``pending`` commits (speculation,
        ``LocalRound.speculate``): ``apply``'s outer step and parameters, then ``begin``, computed on
        copies with the same operations, so the same bits; this member's state is not touched."""
        outer = copy.deepcopy(self.outer)
        self._outer_step(outer, pending.grads, pending.step)
        params = [p.detach().clone() for p in trainer.model.parameters()]
        with torch.no_grad():
            for p, v in zip(params, self._landed(outer, grads, pending.step, params), strict=True):
                p.copy_(v)
            if self.eager:
                self.eager_start(pending.step + 1, params, outer)
        return params

    def _outer_step(self, outer: OuterState, flat: torch.Tensor, step: int) -> None:
        """The outer step of round ``step`` on ``outer`` with the reduced ``[sum t d, sum t]``."""
        f = self.fragment(step)
        ids = outer.fragments[f]
        total = float(flat[-1])
        if total > 0:
            outer.step(f, list((flat[:-1] / total).split([outer.params[i].numel() for i in ids])))

    def _landed(self, outer: OuterState, grads: LocalRound, step: int, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each parameter once round ``step`` committed, ``outer`` holding the global parameters after
        its outer step (module docstring); ``params``: the model's at rest."""
        synced = set(outer.fragments[self.fragment(step)])
        trained = grads.local is not None and grads.step == step
        out = []
        for i, p in enumerate(params):
            if i in synced and self.eager and trained:  # at rest: global less the round's own progress
                out.append(outer.params[i] - (grads.origin[i] - grads.local[i]))
            elif i in synced and self.overlaps and trained:  # the late step, mixed with the round's progress
                out.append(grads.local[i] * self.mix + outer.params[i] * (1 - self.mix))
            elif i in synced:
                out.append(outer.params[i])
            elif trained:
                out.append(grads.local[i])
            else:
                out.append(p)
        return out

    def grad_part(self, flat: torch.Tensor) -> torch.Tensor:
        """The pseudo-gradient in a contribution or reduced value (norms skip the token count)."""
        return flat[:-1]

    def reduce(self, flat: torch.Tensor, group: Any, wait: Wait, wake: Callable[..., None], step: int) -> None:
        """``flat`` = ``[d, t]`` becomes ``[sum t_i d_i, sum t_i]`` over the quorum, in place."""
        tokens = float(flat[-1])
        if self.compressor.lossless:
            flat[:-1].mul_(tokens)
            collect(group.allreduce([flat]), wait, wake)
            return
        f = self.fragment(step)
        self.pending_residual = None
        if self.scatters:
            total, residual = reduce_scatter_compressed(self.compressor, flat[:-1], tokens, self.outer.residual.get(f),
                                                        group, wait, wake, self.all_to_all)
        else:
            total, residual = all_gather_compressed(self.compressor, flat[:-1], tokens, self.outer.residual.get(f),
                                                    group, wait, wake, self.gather)
        self.pending_residual = (step, f, residual)
        flat.copy_(total)

    def apply(self, trainer: Trainer, grads: LocalRound, pending: PendingStep, cfg: RunConfig) -> None:
        """The outer step of a committed round (module docstring)."""
        t, step = trainer, pending.step
        f = self.fragment(step)
        self._outer_step(self.outer, pending.grads, step)
        if self.pending_residual is not None and self.pending_residual[:2] == (step, f):
            self.outer.residual[f] = self.pending_residual[2]
        self.pending_residual = None
        trained = grads.local is not None and grads.step == step
        with torch.no_grad():
            params = list(t.model.parameters())
            for p, v in zip(params, self._landed(self.outer, grads, step, params), strict=True):
                if v is not p:
                    p.copy_(v)
        self.outer.trained_tokens = grads.tokens if trained else 0
        if self.delay:  # where the next round's first inner batches start (none trained: the new global)
            self.outer.round_end = [v.clone() for v in grads.local] if trained else None
        grads.drop()
        samples = cfg.step_samples
        t.commit(pending.vote.start, list(pending.vote.batch), samples * cfg.data.seq_len, samples=samples)
        hooks.reach("between_steps", t.step)

    def replicated(self, trainer: Trainer) -> list[dict[str, torch.Tensor]]:
        """The state every replica holds alike after a commit: the global parameters and momenta."""
        return [self.outer.tensors()]
