"""Silent data corruption (SDC): how often chips return wrong numbers, and what each way of
catching them costs a training run.

Events. The fleet's SDC events form a Poisson process whose rate is the sum over active chips of
the catalog's ``sdc_per_chip_year`` (H100: 6 in Llama 3's 54 days on 16,384 GPUs, one every 9
days, as Gemini's "every week or two" on a fleet of unpublished size, arXiv 2312.11805 s3; every
other chip an assumption, flagged in the catalog), a chip's entry in ``per_chip_year`` replacing
the catalog's, times ``rate_scale``; the plan's rate band and ``recovery.failure_scale`` apply
as to every failure kind. An event is, independently:
- a lemon (share ``lemon_share``): a persistent faulty chip, wrong at every step until removed;
  otherwise transient;
- plausible (share ``plausible_share``): small flips (low mantissa bits) that no trigger sees
  and only a recomputation reveals; otherwise obvious (NaN/Inf, a spike, a fingerprint that
  disagrees with the majority's).

Policies (``reliability.failure_model`` turns these costs into failure kinds):
- ``none`` (torchft, plain DDP: no numeric check). The wrong gradient is averaged into every
  replica and noticed at a later loss-divergence or eval check ``detect_steps`` steps later; the
  job rolls back to the last checkpoint before the corruption and restarts. Lost: the work since
  that checkpoint + ``detect_steps`` steps + ``recovery.restart_s``, whatever the recovery
  strategy (a live quorum cannot heal state every replica shares). Every event is assumed
  noticed (pessimistic for small transient flips, which may never be: they then cost no time
  and leave the weights silently perturbed) and a lemon excluded by the restart's health checks
  (optimistic: without attribution it can take several rollbacks).
- ``in_band`` (tenacia: issue 14). An obvious event is caught at its step, a plausible one by
  sampled recomputation after a geometric number of steps of mean 1 / ``sample_p`` (each step,
  each replica's share is recomputed by a peer with probability ``sample_p``); either costs a
  re-execution of ``reexec_steps`` step times, no rollback. The updates a plausible corruption
  reached before it was caught are kept (an assumption: plausible values, within the gradient
  noise). A lemon costs ``evict_steps`` step times instead and is replaced as a crashed chip is
  under the plan's recovery strategy (live: the fleet one group short while a replacement heals;
  checkpoint: a restart from the last checkpoint). Always on: ``fingerprint_overhead`` of the
  step plus ``sample_p`` x (a share's forward-backward / step), as if the sampled work is spread
  evenly over replicas (a whole share recomputed by one peer inside a synchronous step would
  make every step with any sample wait for it).

Contract: every field is checked in ``__post_init__`` with an error naming it and what is allowed;
``policy`` 'none' with a zero rate leaves a plan's numbers exactly as without SDC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import check, check_choice, check_finite
from .catalog import HOURS_PER_YEAR, Chip

POLICIES = ("none", "in_band")


@dataclass(kw_only=True, slots=True)
class SilentCorruption:
    # How corruptions are caught: 'none' (noticed later, rolled back) or 'in_band' (caught at the
    # step or by sampled recomputation, re-executed). Module docstring.
    policy: str = "none"
    # Multiplies every chip's SDC rate (for sweeps; recovery.failure_scale multiplies all kinds).
    rate_scale: float = 1.0
    # SDC events per chip-year by catalog chip key, replacing the catalog's figure for that chip,
    # e.g. -o sdc.per_chip_year.ascend-910c=0.0248 (10x H100 where the catalog assumes 3x).
    per_chip_year: dict[str, float] = field(default_factory=dict)
    # none: steps from a corruption to the check that notices it. An assumption, not published:
    # 300 steps, the planner's earlier one hour at R2-on-910C's 12 s step (an eval or
    # loss-divergence check every few hundred steps).
    detect_steps: float = 300.0
    # Share of events that are plausible small flips only recomputation reveals. An assumption:
    # no published split for training. Gate-level fault injection on a data-centre GPU found
    # NaN/Inf in 1% of SDC outcomes and single-bit flips in under 40% of bit-flip events
    # (arXiv 2605.04213): a NaN check alone misses most, but how many flips stay plausible
    # after a step's reductions is not published.
    plausible_share: float = 0.5
    # Share of events caused by a persistent faulty chip (a lemon). An assumption: Meta finds
    # about one faulty device per thousand in its fleet, defects that recur (Dixit et al. 2022,
    # arXiv 2203.08989), but no split of training SDCs into persistent and transient is published.
    lemon_share: float = 0.5
    # in_band: probability per step that a replica's share is recomputed by a peer (issue 14's
    # overhead goal is stated at 1/32).
    sample_p: float = 1 / 32
    # in_band: step times one caught event costs (issue 14's goal: at most 2; not yet measured).
    reexec_steps: float = 2.0
    # in_band: step times from a lemon's first caught wrong number to its eviction (issue 14's
    # goal: within 3).
    evict_steps: float = 3.0
    # in_band: always-on fingerprint and trigger cost, fraction of a step (issue 14's goal: 2%;
    # bench/numeric_faults.py measures it on CPU).
    fingerprint_overhead: float = 0.02

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("policy", self.policy, POLICIES)
        check(self.rate_scale >= 0, "rate_scale", self.rate_scale, "a number >= 0")
        for key, rate in self.per_chip_year.items():
            ok = isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) and rate >= 0
            check(ok, f"per_chip_year.{key}", rate, "SDC events per chip-year, a finite number >= 0")
        check(self.detect_steps >= 0, "detect_steps", self.detect_steps, "steps >= 0")
        for key in ("plausible_share", "lemon_share", "fingerprint_overhead"):
            value = getattr(self, key)
            check(0 <= value <= 1, key, value, "a fraction in [0, 1]")
        check(0 < self.sample_p <= 1, "sample_p", self.sample_p, "a probability in (0, 1]")
        for key in ("reexec_steps", "evict_steps"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "step times >= 0")

    def chip_rate_per_s(self, chip: Chip, band: str = "central") -> float:
        """SDC events per second of one chip of type ``chip`` at the ``band`` end of the
        catalog's range (``rate_scale`` and ``per_chip_year`` applied)."""
        if chip.key not in self.per_chip_year:
            return chip.failure_per_s("sdc", scale=self.rate_scale, band=band)
        per_year = float(self.per_chip_year[chip.key]) * chip.band_factor(band)
        return self.rate_scale * per_year / (HOURS_PER_YEAR * 3600)

    def check_chips(self, chips: dict[str, Chip]) -> None:
        """Raise ConfigError for a ``per_chip_year`` key that is not a catalog chip."""
        for key in self.per_chip_year:
            check(key in chips, f"sdc.per_chip_year.{key}", self.per_chip_year[key],
                  f"a rate for a chip of the catalog: {', '.join(chips)}")

    def overhead(self, compute_share: float) -> float:
        """Always-on cost as a fraction of the step: none 0; in_band the fingerprint plus
        ``sample_p`` x ``compute_share`` (a share's forward-backward / step time)."""
        if self.policy == "none":
            return 0.0
        return self.fingerprint_overhead + self.sample_p * compute_share

    def detection_steps(self) -> float:
        """Mean steps from a corruption to its detection."""
        if self.policy == "none":
            return self.detect_steps
        return self.plausible_share / self.sample_p
