"""Failures: Young/Daly, the Monte Carlo against Daly's closed form, the Llama 3 snapshot,
and monotonicity in the failure rate."""

import dataclasses
import math

import numpy as np
import pytest

from tenacia.config import ConfigError
from tenacia.plan.montecarlo import simulate
from tenacia.plan.reliability import (
    FailureKind,
    FailureModel,
    Recovery,
    daly_expected_wall,
    failure_model,
    young_daly_interval,
)
from tenacia.plan.scenario import goodput_curve, run_train

HOUR, DAY = 3600.0, 86400.0


def test_young_daly_interval():
    # small write cost: Young's sqrt(2 * write * MTBF), Daly's correction is second order
    assert young_daly_interval(10, 1e6) == pytest.approx(math.sqrt(2 * 10 * 1e6), rel=0.01)
    assert young_daly_interval(3 * HOUR, HOUR) == HOUR  # write >= 2 MTBF: checkpoint every MTBF
    assert young_daly_interval(60, math.inf) == math.inf


def test_monte_carlo_matches_dalys_expected_run_time():
    mtbf, restart, write = 2 * HOUR, 900.0, 60.0
    interval = young_daly_interval(write, mtbf)
    fm = FailureModel(kinds=[FailureKind(name="crash", rate_per_s=1 / mtbf, rollback=True, downtime_s=restart)],
                      interval_s=interval, write_s=write)
    work = 30 * DAY
    out = simulate(work, fm, trials=2000, seed=1)
    assert out.finished.all()
    expected = daly_expected_wall(work, interval, write, restart, mtbf)
    assert out.completion_s.mean() == pytest.approx(expected, rel=0.005)
    # and the optimum is an optimum: checkpointing 4x more or less often is slower
    for factor in (0.25, 4.0):
        other = dataclasses.replace(fm, interval_s=interval * factor)
        assert simulate(work, other, trials=500, seed=1).completion_s.mean() > expected


def test_without_failures_the_run_takes_its_failure_free_time():
    fm = FailureModel(kinds=[FailureKind(name="crash", rate_per_s=0.0, rollback=True, downtime_s=600)],
                      interval_s=math.inf, write_s=60)
    out = simulate(10 * DAY, fm, trials=3)
    assert np.all(out.completion_s == 10 * DAY) and np.all(out.goodput == 1) and not out.interruptions.any()


def test_llama3_54_day_snapshot(plan_from):
    """Validation case 2: the per-GPU rate implied by 419 unexpected interruptions in 54 days
    on 16,384 H100 gives that count back, and >90% effective training time with a 10-minute
    restart and the 3.2 s checkpoint write derived from Tectonic's bandwidth."""
    result = run_train(plan_from("llama-3-405b-report", overrides=["montecarlo.trials=300"]))
    sim = result.outcome
    per_54_days = sim.interruptions / (sim.completion_s / DAY) * 54
    assert per_54_days.mean() == pytest.approx(419, rel=0.03)
    assert result.failures.summary()["fleet_mtbf_h"] == pytest.approx(3.1, rel=0.01)
    assert sim.goodput.mean() > 0.90


def test_goodput_falls_as_failures_rise_and_live_recovery_beats_restarts(plan_from):
    plan = plan_from(flags=[("model", "r2-guess"), ("fleet", "ascend-910c-8k")],
                     overrides=["montecarlo.trials=200"])
    scales = [0.5, 1, 2, 4, 8]
    goodput = {}
    for strategy in ("checkpoint", "live"):
        p = dataclasses.replace(plan, recovery=dataclasses.replace(plan.recovery, strategy=strategy))
        goodput[strategy] = goodput_curve(run_train(p), scales, trials=200)[1]
    for strategy, series in goodput.items():
        assert all(a > b for a, b in zip(series, series[1:], strict=False)), (strategy, series)
    assert all(live > ckpt for live, ckpt in zip(goodput["live"], goodput["checkpoint"], strict=True))


def test_live_recovery_costs_follow_the_inputs():
    rates = {"crash": 1e-4, "hang": 1e-5, "sdc": 1e-6}
    live = failure_model(rates, Recovery(strategy="live", stall_s=5, detection_s=3, rejoin_s=100, heal_s=20),
                         step_time_s=10, groups=4)
    crash = live.kinds[0]
    assert not crash.rollback and crash.downtime_s == pytest.approx(5 + 10 / 2 + 120 / 4)
    assert {k.name: k for k in live.kinds}["sdc"].rollback  # corruption still rolls back to a checkpoint
    # checkpoints sized for the corruption rate only: far rarer than under checkpoint-restart
    ckpt = failure_model(rates, Recovery(strategy="checkpoint"), step_time_s=10, groups=4)
    assert live.interval_s > 5 * ckpt.interval_s


def test_software_failures_their_own_kind_and_the_site_scales_host_and_software():
    rates = {"crash": 1e-5, "host": 2e-6, "software": 3e-6, "hang": 0.0, "sdc": 0.0}
    base = {k.name: k.rate_per_s for k in failure_model(rates, Recovery(), 10, 4).kinds}
    site = {k.name: k.rate_per_s for k in failure_model(rates, Recovery(site_scale=2.0), 10, 4).kinds}
    assert base["software"] == 3e-6 and site["software"] == 6e-6 and site["host"] == 4e-6
    assert site["crash"] == base["crash"]  # the accelerator's own rate is the chip's, not the site's


def test_a_named_site_scales_its_own_chips_host_and_software_failures(plan_from, chips):
    """Two sites of 1,024 H100 each (TP8 PP1: every chip active), the east site's infrastructure
    failing 3x: host and software rates rise by (3 + 1) / 2 = 2x over the fleet, crashes not."""
    from tenacia.plan.scenario import estimate, failures_for

    flags = [("model", "gpt-22b"), ("fleet", "h100:1024@east+h100:1024@west"), ("layout", "tp=8,pp=1,ep=1")]
    both = ["tokens=1e9", "global_batch_seqs=2048"]
    plain, east = plan_from(flags=flags, overrides=both), plan_from(flags=flags, overrides=[*both, "recovery.site_scales.east=3"])
    est, _ = estimate(plain)
    rates = [{k.name: k.rate_per_s for k in failures_for(p, est).kinds} for p in (plain, east)]
    h100, per_s = chips["h100"], 1 / (365.25 * 86400)
    assert rates[0]["host"] == pytest.approx(2048 * h100.host_per_chip_year * per_s)
    assert rates[1]["host"] == pytest.approx(2 * rates[0]["host"])
    assert rates[1]["software"] == pytest.approx(2 * rates[0]["software"])
    assert rates[1]["crash"] == rates[0]["crash"]
    with pytest.raises(ConfigError) as e:
        plan_from(flags=flags, overrides=[*both, "recovery.site_scales.north=2"])
    assert e.value.field == "recovery.site_scales.north"


def test_results_report_the_band_over_the_catalog_rates(plan_from):
    result = run_train(plan_from("r2-ascend-910c", overrides=["montecarlo.trials=100"]))
    band, central = result.summary()["band"], result.summary()["simulation"]
    assert band["low"]["days_mean"] < central["days_mean"] < band["high"]["days_mean"]
    assert band["low"]["goodput_mean"] > central["goodput_mean"] > band["high"]["goodput_mean"]
