"""What the leader records about each committed step, and the step times the hang bound is taken from.

Contract (one ``StepLog`` per coordinator):
- ``committed(q, votes)`` is called once per committed step, after its verdict was sent: it emits
  ``step_committed`` (loss averaged over the sharers' samples, their tokens, the members, the step
  time or, after a failure, the stall; the phase timings of a quorum's first step; each member's
  compute seconds and tokens) and writes a
  ``metrics.jsonl`` line every ``log_every`` steps and at the last step (mean loss and tokens/s
  over the window since the previous line; for a mixture of experts, the fields
  ``metrics.expert_metrics`` writes, from the votes' summed loads and the biases they set).
- ``step_times`` holds the times between consecutive commits with no failure between them: a
  step that follows a lost member is a stall, not a step time, so recoveries never raise the
  hang bound.
- ``stall_began()`` marks a lost member of the quorum (from the last commit: the stall counts
  the discarded work); ``stalled_for()`` is the stall so far, None when there is none.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from ...events import EventLog
from ..metrics import MetricsLog, expert_metrics
from .protocol import Quorum, Vote
from .timing import Clock, Timing


class StepLog:
    def __init__(self, *, events: EventLog, run_dir: Path, log_every: int, total_steps: int, timing: Timing,
                 clock: Clock):
        self.events, self.metrics, self.clock = events, MetricsLog(run_dir), clock
        self.log_every, self.total_steps = log_every, total_steps
        self.step_times: deque[float] = deque(maxlen=timing.step_window)
        self.last_commit_t: float | None = None
        self.stalled_since: float | None = None
        self._window: list[tuple[float, float, int]] = []  # (wall t, loss, tokens) since the last metrics line
        self._loads: list[list[list[int]]] = []  # MoE: each committed step's loads since the last line
        self._bias: list[list[float]] | None = None  # MoE: the biases the last committed step set

    def stall_began(self) -> None:
        if self.stalled_since is None:
            self.stalled_since = self.last_commit_t or self.clock.now()

    def stalled_for(self) -> float | None:
        return None if self.stalled_since is None else round(self.clock.now() - self.stalled_since, 4)

    def committed(self, q: Quorum, votes: dict[int, Vote]) -> None:
        now = self.clock.now()
        sharers = [votes[r] for r in q.sharers]
        samples = sum(len(v.ids) for v in sharers)
        loss = sum(v.loss * len(v.ids) for v in sharers) / max(samples, 1)
        tokens = sum(v.tokens for v in sharers)
        step_time = stall = None
        if self.last_commit_t is not None:
            step_time = round(now - self.last_commit_t, 4)
            if self.stalled_since is None:
                self.step_times.append(now - self.last_commit_t)
            else:
                stall = round(now - self.stalled_since, 4)
        # what each member computed of the step (a round under diloco and streaming), in members
        # order: a member's wait in the step is the step time less its own compute
        work = ({"compute_s": [votes[r].compute_s for r in q.members],
                 "member_tokens": [votes[r].tokens for r in q.members]}
                if any(v.compute_s is not None for v in votes.values()) else {})
        self.events.emit("step_committed", step=q.step, loss=loss, tokens=tokens, members=list(q.members),
                         step_time_s=step_time, stall_s=stall, quorum_id=q.quorum_id, phases=self._phases(q, votes),
                         reused=sum(v.reused for v in sharers), **work)
        self.last_commit_t, self.stalled_since = now, None
        moe = next((v for v in votes.values() if v.expert_loads is not None), None)
        if moe is not None:
            self._loads.append([list(layer) for layer in moe.expert_loads])
            self._bias = [list(layer) for layer in moe.expert_bias or ()]
        self._log_metrics(q.step, loss, tokens, len(q.members))

    def _phases(self, q: Quorum, votes: dict[int, Vote]) -> dict[str, Any] | None:
        """The first step of a quorum: when each member received the quorum, computed, found the
        process group ready and had the sum, in seconds after the quorum was formed."""
        timing = {r: v.timing for r, v in votes.items() if v.timing}
        if not q.formed_t or not timing:
            return None
        out = {str(r): {k: round(t - q.formed_t, 4) for k, t in tm.items() if t is not None}
               for r, tm in timing.items()}
        return {"members": out, "commit": round(self.clock.wall() - q.formed_t, 4)}

    def _log_metrics(self, step: int, loss: float, tokens: int, members: int) -> None:
        """``metrics.jsonl`` as the single-process trainer writes it: mean loss and tokens/s."""
        self._window.append((self.clock.wall(), loss, tokens))
        if step % self.log_every and step < self.total_steps:
            return
        w = self._window
        t0 = w[0][0] if len(w) > 1 else None
        moe = expert_metrics(self._loads, self._bias) if self._loads and self._bias else {}
        self.metrics.write(step=step, loss=sum(x[1] for x in w) / len(w),
                           tokens_per_s=sum(x[2] for x in w[1:]) / (w[-1][0] - t0) if t0 else None, members=members,
                           **moe)
        self._window, self._loads = w[-1:], []
