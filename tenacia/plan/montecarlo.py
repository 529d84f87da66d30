"""Discrete-event Monte Carlo of a training run under failures, vectorized across trials.

Chips fail independently with exponential lifetimes and are replaced, so the fleet's failures
of each kind form a Poisson process whose rate is the sum over chips: the simulator draws the
fleet's next failure directly (one draw per trial per event), never chip by chip. Its loop is
over events, each step handling every unfinished trial at once with numpy:

    draw the gap to the next failure and its kind
    run from the resume time to the failure: finished? else advance the checkpoint cycle
    apply the failure: roll back to the last checkpoint and/or add its downtime

The job alternates ``interval`` seconds of work with a ``write`` stall; progress at a failure
is committed up to the last completed write. A failure during a recovery restarts a rolling-back
recovery, or adds its downtime to a live one. Work is measured in failure-free wall seconds.

Bounded by construction, never by a clock: before the loop, the closed form of
``reliability.expected_wall`` decides whether the fleet can make progress at all; when its
expected wall time exceeds ``horizon`` x the failure-free time by more than ``NEVER`` (or is
infinite), every trial is reported unfinished with the reason, without simulating. Otherwise the
failures the loop would draw (trials x fleet rate x expected time, capped at the horizon) must
stay under ``max_events``, or ``simulate`` raises ``ConfigError`` naming that budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ConfigError, check, check_finite
from .reliability import FailureModel, expected_wall

NEVER = 10.0  # expected time / horizon beyond which a run is declared never to finish


@dataclass(kw_only=True, slots=True)
class MonteCarloConfig:
    trials: int = 1000
    seed: int = 0
    deadline_days: float = 0.0  # report P(finish by it); 0: failure-free time x 1.1
    horizon: float = 20.0  # a trial still running after horizon x failure-free time counts as unfinished
    max_events: float = 5e7  # failures the simulation may draw in all (~10 s on one core)

    def __post_init__(self) -> None:
        check_finite(self)
        check(0 < self.trials <= 1_000_000, "trials", self.trials, "an integer in 1..1,000,000 (memory grows with it)")
        check(self.deadline_days >= 0, "deadline_days", self.deadline_days, "days >= 0")
        check(1 < self.horizon <= 1000, "horizon", self.horizon, "a number in (1, 1000]")
        check(self.max_events >= 1, "max_events", self.max_events, "a number >= 1")


@dataclass(kw_only=True, slots=True, frozen=True)
class Outcome:
    """Per trial: completion wall time (inf when unfinished), failures suffered, in all and by
    kind. ``useful_s``: the part of ``work_s`` that is training (0: all of it; less when an
    always-on check stretches every step), the numerator of goodput."""

    work_s: float
    completion_s: np.ndarray  # (trials,)
    interruptions: np.ndarray  # (trials,) failures before the run finished
    by_kind: np.ndarray | None = None  # (trials, kinds) the same, by failure kind
    kinds: tuple[str, ...] = ()  # names of by_kind's columns
    useful_s: float = 0.0
    stuck: str = ""  # why no trial can finish, when the closed form says so (not simulated then)

    @property
    def finished(self) -> np.ndarray:
        return np.isfinite(self.completion_s)

    @property
    def goodput(self) -> np.ndarray:
        """Effective training time ratio: failure-free time / wall time (0 when unfinished)."""
        useful = self.useful_s or self.work_s
        return np.where(self.finished, useful / np.where(self.finished, self.completion_s, 1.0), 0.0)

    def p_by(self, deadline_s: float) -> float:
        return float(np.mean(self.completion_s <= deadline_s))

    def summary(self, deadline_s: float) -> dict:
        days = self.completion_s / 86400
        done = days[np.isfinite(days)]
        q = np.percentile(done, [5, 50, 95]) if done.size else [np.inf] * 3
        return {
            "trials": int(self.completion_s.size), "finished": float(self.finished.mean()),
            "days_mean": float(done.mean()) if done.size else float("inf"),
            "days_p5": float(q[0]), "days_p50": float(q[1]), "days_p95": float(q[2]),
            "goodput_mean": float(self.goodput.mean()),
            "interruptions_mean": float(self.interruptions.mean()),
            "events_mean": {name: float(self.by_kind[:, i].mean()) for i, name in enumerate(self.kinds)}
            if self.by_kind is not None else {},
            "deadline_days": deadline_s / 86400, "p_by_deadline": self.p_by(deadline_s),
            "never_finishes": self.stuck,
        }


def simulate(work_s: float, fm: FailureModel, trials: int, seed: int = 0, horizon: float = 20.0,
             max_events: float = 5e7, useful_s: float = 0.0) -> Outcome:
    """Simulate ``trials`` runs that each need ``work_s`` failure-free seconds (module docstring
    for the progress check and the event budget); ``useful_s`` as in ``Outcome``."""
    rng = np.random.default_rng(seed)
    names = tuple(k.name for k in fm.kinds)
    by_kind = np.zeros((trials, len(names)), dtype=np.int64)
    tau = float(min(fm.interval_s, work_s))  # work per checkpoint cycle
    cycle = tau + fm.write_s
    rates = np.array([k.rate_per_s for k in fm.kinds])
    total_rate = rates.sum()
    completion = np.full(trials, np.inf)
    interruptions = np.zeros(trials, dtype=np.int64)
    if total_rate == 0:
        need = _wall_needed(work_s, np.zeros(trials), np.zeros(trials), tau, cycle)
        return Outcome(work_s=work_s, completion_s=need, interruptions=interruptions, by_kind=by_kind,
                       kinds=names, useful_s=useful_s)
    expected = expected_wall(work_s, fm)
    if expected > NEVER * horizon * work_s:
        mtbf = 1 / total_rate
        ratio = "no finite" if expected == np.inf else f"{expected / work_s:.3g}x the failure-free"
        stuck = (f"never finishes: the fleet fails every {mtbf:.3g} s, too often to make progress "
                 f"({ratio} expected time; the horizon is {horizon:g}x)")
        return Outcome(work_s=work_s, completion_s=np.full(trials, np.inf),
                       interruptions=np.zeros(trials, dtype=np.int64), by_kind=by_kind, kinds=names,
                       useful_s=useful_s, stuck=stuck)
    events = trials * total_rate * min(expected, horizon * work_s)
    if events > max_events:
        raise ConfigError("montecarlo.max_events", max_events,
                          f"at least {events:.3g}: {trials} trials of this run draw that many failures "
                          f"(fleet MTBF {1 / total_rate:.3g} s); raise the budget or lower montecarlo.trials")
    cum = np.cumsum(rates / total_rate)
    rollback = np.array([k.rollback for k in fm.kinds])
    downtime = np.array([k.downtime_s for k in fm.kinds])
    limit = horizon * work_s

    idx = np.arange(trials)  # trials still running
    t = np.zeros(trials)  # time of the last failure
    resume = np.zeros(trials)  # when the job runs again
    committed = np.zeros(trials)  # work saved by the last completed checkpoint
    pos = np.zeros(trials)  # wall position inside the current checkpoint cycle
    count = np.zeros(trials, dtype=np.int64)
    while idx.size:
        n = idx.size
        t_next = t + rng.exponential(1 / total_rate, n)
        run = np.maximum(t_next - resume, 0.0)
        need = _wall_needed(work_s, committed, pos, tau, cycle)
        done = need <= run
        completion[idx[done]] = resume[done] + need[done]
        interruptions[idx[done]] = count[done]
        late = ~done & (t_next > limit)
        interruptions[idx[late]] = count[late]
        keep = ~done & ~late
        idx, t_next, run = idx[keep], t_next[keep], run[keep]
        resume, committed, pos, count = resume[keep], committed[keep], pos[keep], count[keep]
        cycles = np.floor((pos + run) / cycle)
        committed = committed + cycles * tau
        pos = pos + run - cycles * cycle
        kind = np.minimum(np.searchsorted(cum, rng.random(idx.size)), len(cum) - 1)
        by_kind[idx, kind] += 1
        back = rollback[kind]
        pos = np.where(back, 0.0, pos)
        resume = np.where(back, t_next, np.maximum(resume, t_next)) + downtime[kind]
        t = t_next
        count = count + 1
    return Outcome(work_s=work_s, completion_s=completion, interruptions=interruptions, by_kind=by_kind,
                   kinds=names, useful_s=useful_s)


def _wall_needed(work_s: float, committed: np.ndarray, pos: np.ndarray, tau: float, cycle: float) -> np.ndarray:
    """Failure-free wall time from cycle position ``pos`` to the end of the run: full cycles of
    (tau work + write) until the last partial one, which needs no checkpoint after it."""
    need = work_s - committed
    full = np.ceil(need / tau) - 1
    return full * cycle + (need - full * tau) - pos
