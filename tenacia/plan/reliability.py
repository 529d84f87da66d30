"""Failures and what they cost: per-kind fleet rates, recovery strategies, Young/Daly.

Kinds of failure (rates per chip type in the catalog at the ``rate_band`` end of its range,
scaled by ``failure_scale``; host and software rates also by ``site_scale`` and, per named
site, ``site_scales``):
- crash: the accelerator dies; noticed at once.
- host: its server, network, storage or power fails; noticed at once, costs what a crash costs.
- software: a software bug or dependency kills the job (Llama 3: 13.4% of unexpected
  interruptions); a rate per chip-year (``software_per_chip_year``), recovered like a crash.
- hang: the chip stops making progress; noticed by a timeout.
- sdc (silent data corruption): wrong numbers; what they cost depends on how they are caught
  (``sdc.SilentCorruption.policy``): under 'none' noticed ``detect_steps`` steps later and rolled
  back to a checkpoint older than the corruption whatever the strategy; under 'in_band'
  re-executed at the step (kind ``sdc``), a persistent faulty chip evicted and replaced as a
  crashed one is (kind ``sdc-lemon``).

Strategies:
- checkpoint: every crash or hang stops the whole job; it restarts from the last checkpoint
  (``restart_s`` after the failure, plus the hang timeout for hangs). Checkpoints are written
  every ``checkpoint_interval_s`` of work (0: the Young/Daly optimum), each stalling the job for
  ``checkpoint_write_s``.
- live: replicas that hold a whole model copy (``dp / ep`` groups of ``tp*pp*ep`` chips) form a
  quorum, as tenacia's replicas do. A crash or hang costs every survivor ``max(detection_s,
  stall_s)`` without a committed step plus the discarded in-flight step (half a step on
  average), and the fleet runs one group short until the replacement has started
  (``rejoin_s``) and healed from a peer (``heal_s``): ``(rejoin_s + heal_s) / groups`` of
  whole-fleet time. Corruption caught late still needs a checkpoint rollback; checkpoints are
  then sized by Young/Daly for the rolling-back kinds alone (none at all under 'in_band').
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import check, check_choice, check_finite
from .sdc import SilentCorruption

KINDS = ("crash", "host", "software", "hang", "sdc")


@dataclass(kw_only=True, slots=True)
class Recovery:
    strategy: str = "checkpoint"  # 'checkpoint' or 'live'
    checkpoint_interval_s: float = 0.0  # work between checkpoints; 0: Young/Daly optimum
    checkpoint_write_s: float = 60.0  # job stall per checkpoint (a guess; async saving: seconds)
    restart_s: float = 600.0  # failure -> training again under checkpoint-restart (a guess)
    hang_timeout_s: float = 600.0  # a hang is declared after this (torch's default NCCL timeout)
    detection_s: float = 3.0  # live: failure declared (torchft heartbeat timeout, FACTS.md)
    stall_s: float = 3.0  # live: survivors' time without a committed step (FACTS.md: 3.0 s)
    rejoin_s: float = 300.0  # live: a replacement is up (spare node + process start; a guess)
    heal_s: float = 60.0  # live: the replacement receives state from a peer (a guess)
    failure_scale: float = 1.0  # multiplies every catalog failure rate (for sweeps)
    # Job failures of software (bugs, dependencies, unattributed), per chip-year. Derived: Llama 3
    # paper s3.3.4, the 20.3% of 419 unexpected interruptions neither hardware (78%) nor NCCL
    # watchdog hangs (1.7%), / (16,384 GPUs x 54 days).
    software_per_chip_year: float = 0.0351
    # Multiplies host and software rates: the sites' infrastructure and operations (no published
    # per-site figure; Kokolis et al. 2024's two A100 clusters differ 2.8x in failures a node-day).
    site_scale: float = 1.0
    # A further multiplier per named site (fleet groups' ``site``), on its chips' host and
    # software rates: -o recovery.site_scales.east=2
    site_scales: dict[str, float] = field(default_factory=dict)
    rate_band: str = "central"  # which end of the catalog's failure-rate range: low, central, high

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("strategy", self.strategy, ("checkpoint", "live"))
        check(self.checkpoint_interval_s >= 0, "checkpoint_interval_s", self.checkpoint_interval_s,
              "seconds >= 0 (0: the Young/Daly optimum)")
        check(self.checkpoint_write_s > 0, "checkpoint_write_s", self.checkpoint_write_s, "seconds > 0")
        for key in ("restart_s", "hang_timeout_s", "detection_s", "stall_s", "rejoin_s", "heal_s"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "seconds >= 0")
        check(self.failure_scale >= 0, "failure_scale", self.failure_scale, "a number >= 0")
        check(self.software_per_chip_year >= 0, "software_per_chip_year", self.software_per_chip_year, "a number >= 0")
        check(self.site_scale >= 0, "site_scale", self.site_scale, "a number >= 0")
        for name, value in self.site_scales.items():
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
            check(ok, f"site_scales.{name}", value, "a finite number >= 0")
        check_choice("rate_band", self.rate_band, ("low", "central", "high"))


def young_daly_interval(write_s: float, mtbf_s: float) -> float:
    """Work between checkpoints that minimizes expected run time (Daly 2006, higher-order
    estimate; Young 1974 is its first term sqrt(2 * write * MTBF)). MTBF of the whole job."""
    if not math.isfinite(mtbf_s):
        return math.inf
    if write_s >= 2 * mtbf_s:
        return mtbf_s
    x = write_s / (2 * mtbf_s)
    return math.sqrt(2 * write_s * mtbf_s) * (1 + math.sqrt(x) / 3 + x / 9) - write_s


def daly_expected_wall(work_s: float, interval_s: float, write_s: float, restart_s: float,
                       mtbf_s: float) -> float:
    """Expected wall time of checkpoint-restart under exponential failures, a failure also
    possible while restarting or writing (Daly 2006, eq. 14): W/tau * M e^(R/M) (e^((tau+d)/M) - 1)."""
    return work_s / interval_s * mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1((interval_s + write_s) / mtbf_s)


@dataclass(kw_only=True, slots=True, frozen=True)
class FailureKind:
    """One failure kind as the simulator sees it: fleet rate, whether it rolls back to the last
    checkpoint, and the wall time it costs beyond any lost work."""

    name: str
    rate_per_s: float
    rollback: bool
    downtime_s: float


@dataclass(kw_only=True, slots=True, frozen=True)
class FailureModel:
    kinds: list[FailureKind]
    interval_s: float  # work between checkpoints
    write_s: float

    @property
    def rollback_rate(self) -> float:
        return sum(k.rate_per_s for k in self.kinds if k.rollback)

    def summary(self) -> dict:
        total = sum(k.rate_per_s for k in self.kinds)
        return {
            "fleet_mtbf_h": 1 / total / 3600 if total else math.inf,
            "checkpoint_interval_min": self.interval_s / 60,
            "checkpoint_write_s": self.write_s,
            "kinds": {k.name: {"per_day": k.rate_per_s * 86400, "rollback": k.rollback,
                               "downtime_s": k.downtime_s} for k in self.kinds},
        }


def failure_model(chip_rates: dict[str, float], recovery: Recovery, step_time_s: float,
                  groups: int, sdc: SilentCorruption | None = None) -> FailureModel:
    """Build the simulator's failure kinds. ``chip_rates``: fleet rate per kind of ``KINDS``, per
    second (sum over active chips of the catalog rate at the plan's band, and of
    ``software_per_chip_year``); ``groups``: replica groups that each hold a whole model (live
    recovery's unit); ``sdc``: how corruptions are caught (default: policy 'none')."""
    r, sdc = recovery, sdc or SilentCorruption()
    rates = {k: chip_rates.get(k, 0.0) * r.failure_scale * (r.site_scale if k in ("host", "software") else 1.0)
             for k in KINDS}
    live = r.strategy == "live"
    live_loss = max(r.detection_s, r.stall_s) + step_time_s / 2 + (r.rejoin_s + r.heal_s) / max(groups, 1)
    kinds = [
        *(FailureKind(name=name, rate_per_s=rates[name], rollback=not live,
                      downtime_s=live_loss if live else r.restart_s) for name in ("crash", "host", "software")),
        FailureKind(name="hang", rate_per_s=rates["hang"], rollback=not live,
                    downtime_s=live_loss if live else r.hang_timeout_s + r.restart_s),
        *_corruption_kinds(rates["sdc"], sdc, step_time_s, r.restart_s,
                           crash_downtime_s=live_loss if live else r.restart_s, crash_rollback=not live),
    ]
    rollback_rate = sum(k.rate_per_s for k in kinds if k.rollback)
    interval = r.checkpoint_interval_s
    if interval == 0:
        interval = young_daly_interval(r.checkpoint_write_s, 1 / rollback_rate if rollback_rate else math.inf)
    return FailureModel(kinds=kinds, interval_s=interval, write_s=r.checkpoint_write_s)


def _corruption_kinds(rate_per_s: float, sdc: SilentCorruption, step_time_s: float, restart_s: float,
                      crash_downtime_s: float, crash_rollback: bool) -> list[FailureKind]:
    """The SDC kinds of ``sdc.policy`` (``sdc`` module docstring) at fleet rate ``rate_per_s``."""
    if sdc.policy == "none":
        return [FailureKind(name="sdc", rate_per_s=rate_per_s, rollback=True,
                            downtime_s=sdc.detect_steps * step_time_s + restart_s)]
    return [FailureKind(name="sdc", rate_per_s=rate_per_s * (1 - sdc.lemon_share), rollback=False,
                        downtime_s=sdc.reexec_steps * step_time_s),
            FailureKind(name="sdc-lemon", rate_per_s=rate_per_s * sdc.lemon_share, rollback=crash_rollback,
                        downtime_s=sdc.evict_steps * step_time_s + crash_downtime_s)]


def expected_wall(work_s: float, fm: FailureModel) -> float:
    """Expected wall time of a run needing ``work_s`` failure-free seconds under ``fm``, in
    closed form: Daly's checkpoint-restart formula for the kinds that roll back (their mean
    downtime as the restart), stretched by 1 / (1 - rate x downtime) for the kinds that do not
    (each costs its downtime, failures during it included). Infinite when the fleet cannot make
    progress: the non-rollback kinds alone keep it down all the time, or a checkpoint cycle
    almost never completes between rollbacks (the exponent overflows)."""
    live = [k for k in fm.kinds if not k.rollback]
    busy = sum(k.rate_per_s * k.downtime_s for k in live)
    if busy >= 1:
        return math.inf
    rate = fm.rollback_rate
    if rate == 0:
        return work_s / (1 - busy)
    restart = sum(k.rate_per_s * k.downtime_s for k in fm.kinds if k.rollback) / rate
    tau = min(fm.interval_s, work_s)
    exponent = max(restart, tau + fm.write_s) * rate
    if exponent > 700:  # e^700 ~ 1e304: beyond float range, and beyond any horizon
        return math.inf
    return daly_expected_wall(work_s, tau, fm.write_s, restart, 1 / rate) / (1 - busy)
