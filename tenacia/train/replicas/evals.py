"""Held-out evaluation in a replica run: every ``train.eval_every`` committed steps, and at the end.

The unit is the protocol step, the one ``train.steps``, ``step_committed`` and the sample ledger
count: under ddp one optimizer step of the global batch; under diloco and streaming one outer round
(``replicas.outer.inner_steps`` inner steps). ``train.eval_every = 4`` evaluates after steps (or
rounds) 4, 8, ...; 0 evaluates only at the end.

Contract:
- ``due(step, every, total)``: a mid-run evaluation follows committed step ``step`` when ``every``
  > 0 divides it and it is not the last (``total``): the last step's is the final evaluation,
  taken at the stop (``Replica.finish``). The rule of the single-process ``Trainer.fit``.
- Who and when: the replica whose process holds the leader (its coordinator, not stopped) when it
  applies the step, right after applying it and before computing the next: one replica a step, one
  ``train.eval_batches`` forward pass; the others wait for it in the next step's reduce. Around a
  change of leader a step's evaluation can be missing (the leader was lost after the commit) or
  repeated (a step redone after a resume from a checkpoint), as a single process's after a resume.
- What it measures: ``Trainer.evaluate`` on that replica's model as the commit left it, as the
  final evaluation does: the global parameters under ddp and diloco; under streaming the synced
  fragments' global parameters and the others as this replica trained them. Under the eager outer
  step with one fragment (``replicas.outer.eager``) a replica at rest holds the global parameters
  less its own progress not yet averaged (one member's view, noisier than any average: 0.3-0.9
  higher here, docs/benchmarks.md); the evaluation reads the global parameters then, which every
  replica agrees on, one round behind (the last round's progress is in flight).
- It only reads: no grad, eval mode and back to train mode, fixed held-out windows, no random draw,
  the sampler, optimizer and outer state untouched. Fingerprints, the ledger and a resume's bits
  are those of the same run with ``eval_every = 0``.
- Record: an ``eval`` event (``step``, ``eval_loss``) and a ``metrics.jsonl`` line (``step``,
  ``eval_loss``), as the single-process trainer writes them (``tenacia report``,
  ``bench/slow_links.py`` read them).
"""

from __future__ import annotations

import torch

from ..metrics import MetricsLog
from ..trainer import Trainer


def due(step: int, every: int, total: int) -> bool:
    """Is committed step ``step`` followed by a mid-run evaluation (module docstring)?"""
    return every > 0 and step % every == 0 and step < total


def record_eval(trainer: Trainer) -> float:
    """Evaluate ``trainer``'s model at its committed step, record it, and return the loss."""
    eager = trainer.cfg.replicas.outer.eager and trainer.outer is not None and len(trainer.outer.fragments) == 1
    if not eager:
        loss = trainer.evaluate()
    else:
        params = list(trainer.model.parameters())
        rest = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, g in zip(params, trainer.outer.params, strict=True):
                p.copy_(g)
            loss = trainer.evaluate()
            for p, r in zip(params, rest, strict=True):
                p.copy_(r)
    MetricsLog(trainer.run_dir).write(step=trainer.step, eval_loss=loss)
    trainer.events.emit("eval", step=trainer.step, eval_loss=loss)
    return loss
