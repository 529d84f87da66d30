"""One training scenario from inputs to answers: the config tree of ``tenacia plan train`` and
the function that runs it (layout, step time, the sync strategy between sites, failures, Monte
Carlo, what silent corruption costs under each detection policy)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..config import check, check_choice, check_finite, to_dict
from .assumptions import Assumptions
from .calibrate import Calibration
from .catalog import HARDWARE, HOURS_PER_YEAR, Chip, load_catalog
from .estimate import TrainingEstimate, estimate_training
from .fleet import FleetSpec
from .layout import Layout
from .models import ModelSpec
from .montecarlo import MonteCarloConfig, Outcome, simulate
from .reliability import FailureModel, Recovery, expected_wall, failure_model
from .sdc import POLICIES, SilentCorruption
from .search import search_layout
from .sites import (
    Site,
    SyncEstimate,
    as_training_estimate,
    candidates,
    estimate_sync,
    plan_sites,
    sites_summary,
)
from .sync import SyncSpec


@dataclass(kw_only=True, slots=True)
class TrainPlan:
    """Inputs of a training plan. ``tokens``/``global_batch_seqs`` 0: the model preset's."""

    model: ModelSpec = field(default_factory=ModelSpec)
    fleet: FleetSpec = field(default_factory=FleetSpec)
    layout: Layout = field(default_factory=Layout)
    assumptions: Assumptions = field(default_factory=Assumptions)
    recovery: Recovery = field(default_factory=Recovery)
    montecarlo: MonteCarloConfig = field(default_factory=MonteCarloConfig)
    sdc: SilentCorruption = field(default_factory=SilentCorruption)
    sync: SyncSpec = field(default_factory=SyncSpec)  # between sites (sync.py, sites.py)
    precision: str = "bf16"  # matmul precision: 'bf16' or 'fp8' (attention stays BF16)
    tokens: float = 0.0
    global_batch_seqs: int = 0
    catalog: str = ""  # a TOML file of extra chips, added to the built-in catalog

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("precision", self.precision, ("bf16", "fp8"))
        check(self.tokens >= 0, "tokens", self.tokens, "a token count >= 0 (0: the model preset's)")
        check(self.global_batch_seqs >= 0, "global_batch_seqs", self.global_batch_seqs,
              "sequences >= 0 (0: the model preset's)")
        self.tokens = self.tokens or self.model.train_tokens
        self.global_batch_seqs = self.global_batch_seqs or self.model.global_batch_seqs
        check(self.tokens > 0, "tokens", self.tokens, "a token count (this model has no published run: give --tokens)")
        check(self.global_batch_seqs > 0, "global_batch_seqs", self.global_batch_seqs,
              "a batch in sequences (this model has no published run: give --batch)")
        sites = self.fleet.sites()
        for name in self.recovery.site_scales:
            check(name in sites, f"recovery.site_scales.{name}", name,
                  f"a named site of the fleet ({', '.join(repr(n) for n in sites if n) or 'none: give groups a site'})")


@dataclass(kw_only=True, slots=True, frozen=True)
class TrainResult:
    plan: TrainPlan
    estimate: TrainingEstimate
    layouts_fitting: int
    failures: FailureModel
    outcome: Outcome
    bands: dict[str, Outcome]  # the same run at the low and high ends of the catalog's failure rates
    deadline_s: float
    uncertain: dict[str, list[str]]  # chip -> catalog figures flagged uncertain
    calibration: Calibration | None
    corruption: dict  # corruption_summary()
    sync: SyncEstimate | None  # the strategy between sites, when the plan has several or not ddp

    def summary(self) -> dict:
        est, sim = self.estimate, self.outcome.summary(self.deadline_s)
        stretch = sim["days_mean"] / est.ideal_days if np.isfinite(sim["days_mean"]) else float("inf")
        return {
            "inputs": to_dict(self.plan),
            "training": est.summary() | {"layouts_fitting": self.layouts_fitting},
            "reliability": self.failures.summary() | {"strategy": self.plan.recovery.strategy},
            "simulation": sim,
            "band": {name: {k: v for k, v in out.summary(self.deadline_s).items()
                            if k in ("days_mean", "days_p95", "goodput_mean", "p_by_deadline", "never_finishes")}
                     for name, out in self.bands.items()},
            "expected": {"days": sim["days_mean"], "chip_hours": est.chip_hours * stretch,
                         "cost": est.cost * stretch, "energy_mwh": est.energy_mwh * stretch},
            "sdc": self.corruption | {"events_mean": sum(
                n for k, n in sim["events_mean"].items() if k.startswith("sdc"))},
            "uncertain_inputs": self.uncertain,
            "calibration": self.calibration.summary() if self.calibration else None,
            "sync": self.sync.summary() | {"per_site": sites_summary(self.sync.sites, self.sync.balance)} if self.sync else None,
        }


def apply_calibration(plan: TrainPlan, calibration: Calibration) -> TrainPlan:
    """The plan with measured live-recovery medians in place of the configured ones."""
    recovery = dataclasses.replace(plan.recovery, **calibration.medians)
    return dataclasses.replace(plan, recovery=recovery)


def fleet_failure_rates(plan: TrainPlan, est: TrainingEstimate, recovery: Recovery,
                        sdc: SilentCorruption) -> dict[str, float]:
    """Failures per second of each kind over the chips the layout uses (idle chips are spares),
    hardware at the recovery's rate band (SDC as ``sdc`` sets it); software per active chip; host
    and software times each group's site multiplier (``recovery.site_scales``)."""
    f = plan.fleet  # the estimate's groups: sites in order of first appearance, fleet order inside one
    site = [recovery.site_scales.get(g.site, 1.0) for name in f.sites() for g in f.groups if g.site == name]
    active = [g.chips - g.idle for g in est.groups]
    rates = {kind: sum(n * g.chip.failure_per_s(kind, band=recovery.rate_band) * (m if kind == "host" else 1.0)
                       for n, g, m in zip(active, est.groups, site, strict=True))
             for kind in HARDWARE}
    rates["sdc"] = sum(n * sdc.chip_rate_per_s(g.chip, recovery.rate_band) for n, g in zip(active, est.groups, strict=True))
    software = sum(n * m for n, m in zip(active, site, strict=True)) * recovery.software_per_chip_year
    return rates | {"software": software / (HOURS_PER_YEAR * 3600)}


def work_s(est: TrainingEstimate, sdc: SilentCorruption) -> float:
    """Failure-free seconds of the run with the policy's always-on overhead: a share of the step
    is forward-backward (what sampled recomputation redoes), the rest gradient reduction and
    the optimizer."""
    fixed = max(g.grad_sync_s for g in est.groups) + max(g.optimizer_s for g in est.groups)
    return est.ideal_s * (1 + sdc.overhead(max(1 - fixed / est.step_time_s, 0.0)))


def _whole(plan: TrainPlan, chips: dict[str, Chip]) -> tuple[TrainingEstimate, int]:
    """The fleet as one site under ddp, searching the layout when any of tp/pp/ep is 0."""
    fleet = plan.fleet.resolve(chips)
    args = (plan.model, fleet, plan.layout, plan.assumptions, plan.precision, plan.tokens,
            plan.global_batch_seqs, plan.fleet.balance)
    if plan.layout.searched:
        return search_layout(*args)
    return estimate_training(*args), 1


def _sites(plan: TrainPlan, chips: dict[str, Chip]) -> tuple[list[Site], int]:
    return plan_sites(plan.model, plan.fleet, chips, plan.layout, plan.assumptions, plan.precision, plan.tokens,
                      plan.global_batch_seqs)


def _sync(plan: TrainPlan, sites: list[Site], spec: SyncSpec) -> SyncEstimate:
    cost_per_s = sum(s.lockstep.cost / s.lockstep.ideal_s for s in sites)  # the same chips either way
    return estimate_sync(sites, spec, plan.model, plan.assumptions, plan.fleet.balance, plan.tokens, cost_per_s)


def estimate_with_sync(plan: TrainPlan, chips: dict[str, Chip] | None = None
                       ) -> tuple[TrainingEstimate, int, SyncEstimate | None]:
    """Failure-free estimate and layouts estimated; with several sites or a strategy other than
    ddp, the run as ``plan.sync`` makes it (``sites.py``) and that strategy's estimate."""
    chips = chips if chips is not None else load_catalog(plan.catalog or None)
    if len(plan.fleet.sites()) == 1 and plan.sync.strategy == "ddp":
        est, fitting = _whole(plan, chips)
        return est, fitting, None
    sites, fitting = _sites(plan, chips)
    sync = _sync(plan, sites, plan.sync)
    return as_training_estimate(sites, sync, plan.model), fitting, sync


def estimate(plan: TrainPlan, chips: dict[str, Chip] | None = None) -> tuple[TrainingEstimate, int]:
    """Failure-free estimate and layouts estimated (``estimate_with_sync``)."""
    est, fitting, _ = estimate_with_sync(plan, chips)
    return est, fitting


def search_sync(plan: TrainPlan) -> tuple[list[Site], list[SyncEstimate]]:
    """Every candidate of ``plan.sync.search`` on the plan's sites, fastest to the token budget
    at equal quality first (ties: fewer bytes sent over a site's link per token, then the shorter
    exchange, first)."""
    sites, _ = _sites(plan, load_catalog(plan.catalog or None))
    found = [_sync(plan, sites, spec) for spec in candidates(plan.sync)]
    return sites, sorted(found, key=lambda e: (e.days, e.wire_bytes_per_token, e.exchange_s))


def failures_for(plan: TrainPlan, est: TrainingEstimate, recovery: Recovery | None = None,
                 sdc: SilentCorruption | None = None) -> FailureModel:
    groups = est.layout.dp // est.layout.ep  # replica groups holding a whole model
    recovery, sdc = recovery or plan.recovery, sdc or plan.sdc
    return failure_model(fleet_failure_rates(plan, est, recovery, sdc), recovery, est.step_time_s, groups, sdc)


def corruption_summary(plan: TrainPlan, est: TrainingEstimate) -> dict:
    """Silent corruption under each policy, in closed form (``reliability.expected_wall``):
    expected SDC events (fleet rate x expected wall time: exact for a Poisson process), days lost
    to them (expected days minus the same policy's at a zero SDC rate), days of always-on
    overhead (that minus policy 'none' at a zero rate), and ``in_band_minus_none_days``. Also the
    SDC rate per active chip-year of this plan and the rate at which in_band's overhead equals
    what it saves (``break_even_per_chip_year``; inf: never, 0: at any rate, nan: this plan's
    rate is zero, nothing to scale)."""
    chips = sum(g.chips - g.idle for g in est.groups)
    rate = fleet_failure_rates(plan, est, plan.recovery, plan.sdc)["sdc"] * plan.recovery.failure_scale

    def days(policy: str, scale: float) -> float:
        sdc = dataclasses.replace(plan.sdc, policy=policy, rate_scale=plan.sdc.rate_scale * scale)
        return expected_wall(work_s(est, sdc), failures_for(plan, est, sdc=sdc)) / 86400

    quiet = days("none", 0.0)
    out: dict = {"policy": plan.sdc.policy, "per_chip_year": rate / chips * HOURS_PER_YEAR * 3600,
                 "detection_steps": plan.sdc.detection_steps()}
    for policy in POLICIES:
        total, zero = days(policy, 1.0), days(policy, 0.0)
        out[policy] = {"days": total, "events": rate * total * 86400, "lost_days": total - zero,
                       "overhead_days": zero - quiet,
                       "detection_steps": dataclasses.replace(plan.sdc, policy=policy).detection_steps()}
    out["in_band_minus_none_days"] = out["in_band"]["days"] - out["none"]["days"]
    out["break_even_per_chip_year"] = math.nan if rate == 0 else out["per_chip_year"] * _break_even_scale(
        lambda x: math.isinf(days("none", x)) or days("in_band", x) <= days("none", x))
    return out


def _break_even_scale(in_band_wins: Callable[[float], bool]) -> float:
    """Smallest SDC rate multiple (of the plan's) at which in_band is no slower than none:
    doubled from 1 until in_band wins (inf if it never does by 2^40), then bisected."""
    if in_band_wins(0.0):
        return 0.0
    hi = 1.0
    while not in_band_wins(hi):
        hi *= 2
        if hi > 2.0**40:
            return math.inf
    lo = hi / 2 if hi > 1 else 0.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if in_band_wins(mid) else (mid, hi)
    return hi


def run_train(plan: TrainPlan, calibration: Calibration | None = None) -> TrainResult:
    if calibration is not None:
        plan = apply_calibration(plan, calibration)
    chips = load_catalog(plan.catalog or None)
    plan.sdc.check_chips(chips)
    est, fitting, sync = estimate_with_sync(plan, chips)
    fm = failures_for(plan, est)
    mc = plan.montecarlo
    work = work_s(est, plan.sdc)
    outcome = simulate(work, fm, mc.trials, mc.seed, mc.horizon, mc.max_events, useful_s=est.ideal_s)
    bands = {}
    for band in ("low", "high"):
        other = dataclasses.replace(plan.recovery, rate_band=band)
        bands[band] = simulate(work, failures_for(plan, est, other), mc.trials, mc.seed, mc.horizon,
                               mc.max_events, useful_s=est.ideal_s)
    deadline = mc.deadline_days * 86400 or est.ideal_s * 1.1
    uncertain = {g.chip.key: g.chip.uncertain_figures() for g in est.groups}
    return TrainResult(plan=plan, estimate=est, layouts_fitting=fitting, failures=fm, outcome=outcome, bands=bands,
                       deadline_s=deadline, uncertain=uncertain, calibration=calibration,
                       corruption=corruption_summary(plan, est), sync=sync)


def chip_year_rate(result: TrainResult) -> float:
    """Failures per chip-year of the result's run, averaged over its active chips."""
    chips = sum(g.chips - g.idle for g in result.estimate.groups)
    per_s = sum(k.rate_per_s for k in result.failures.kinds)
    return per_s / chips * HOURS_PER_YEAR * 3600


def goodput_curve(result: TrainResult, scales: list[float], trials: int = 200) -> tuple[list[float], list[float]]:
    """(failures per chip-year, mean goodput) of the result's run with every failure rate
    multiplied by each scale."""
    base = chip_year_rate(result)
    out = []
    for scale in scales:
        recovery = dataclasses.replace(result.plan.recovery, failure_scale=result.plan.recovery.failure_scale * scale)
        fm = failures_for(result.plan, result.estimate, recovery)
        mc = result.plan.montecarlo
        est = result.estimate
        out.append(float(simulate(work_s(est, result.plan.sdc), fm, trials, mc.seed, mc.horizon, mc.max_events,
                                  useful_s=est.ideal_s).goodput.mean()))
    return [base * s for s in scales], out
