"""A replica's work after a commit (a part of ``Replica``): the leader's periodic evals and
checkpoints, and the end of the job: the final fingerprint, eval, checkpoint and ``finished.json``.

Only the replica whose coordinator is leading evaluates and saves (its heartbeats say ``eval``
meanwhile). The job ends on the leader's ``stop``, or, when the link that stop came on was lost,
on finding that this replica's own coordinator ended the job (``ended_here``); a replica that
finds so without holding the last step cannot write the end and exits non-zero (``FinishLost``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ... import checkpoint as ckpt
from ...storage import atomic_write_json
from . import evals
from .protocol import Resolve
from .step_exits import FinishLost


class AfterCommit:
    def after_commit(self: Any) -> None:
        """The leader's replica evaluates every ``train.eval_every`` steps (``evals.py``; its
        heartbeats say ``eval`` meanwhile, no hook point is reached) and saves every
        ``checkpoint.every``. The eval's seconds go into its next vote's ``compute_s``: under
        diloco and streaming the leader's share of the next rounds is sized to its compute and
        its evals together, so the others do not wait for the eval (``speed.py``)."""
        t = self.trainer
        leading = self.server.coordinator is not None and not self.server.coordinator.stopped
        if leading and evals.due(t.step, self.cfg.train.eval_every, self.cfg.train.steps):
            self.phase = "eval"
            began = time.monotonic()
            evals.record_eval(t)
            self.evaluated_s += time.monotonic() - began
            self.phase = "idle"
        every = self.cfg.checkpoint.every
        if leading and every and t.step % every == 0 and t.step < self.cfg.train.steps:
            t.save_checkpoint(term=self.server.coordinator.term)

    def finish(self: Any) -> int:
        t = self.trainer
        self.events.emit("state_fingerprint", step=t.step, replica=self.id, fingerprint=ckpt.tensors_fingerprint(
            t.step, t.sampler.state_dict(), self.sync.replicated(t)))
        coord = self.server.coordinator
        if coord is not None:  # the leader writes the final checkpoint and the eval
            eval_loss = evals.record_eval(t)
            t.save_checkpoint(term=coord.term)
            t.checkpoints.wait()
            atomic_write_json(Path(self.cfg.train.run_dir) / "finished.json",
                              {"step": t.step, "eval_loss": eval_loss, "checkpoint": str(t.checkpoints.last_path)})
            t.events.emit("run_finished", step=t.step, eval_loss=eval_loss)
        return 0

    def ended_here(self: Any) -> bool:
        """Did this replica's own coordinator end the job (its final stop sent, never read here:
        the link it came on was lost)? Then there is nobody left to rejoin: the last step, still
        pending if its verdict was not read either, is applied and the replica finishes as on the
        stop; ``FinishLost`` if it does not hold that step."""
        coord = self.server.coordinator
        if coord is None or not coord.finished:
            return False
        self.apply_resolve(Resolve(coord.settled[0], commit=True))
        if self.trainer.step < self.cfg.train.steps:
            raise FinishLost(f"this replica's coordinator ended the job at step {coord.settled[0]}, "
                             f"which it does not hold (step {self.trainer.step})")
        return True
