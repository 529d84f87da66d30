"""Silent data corruption in the planner: the closed form against the Monte Carlo, no change at a
zero rate, in-band detection losing less than none, config errors, and the scenario end to end."""

import dataclasses
import itertools
import json

import numpy as np
import pytest

from tenacia.cli import main
from tenacia.config import ConfigError
from tenacia.plan.montecarlo import simulate
from tenacia.plan.reliability import FailureModel, Recovery, expected_wall, failure_model
from tenacia.plan.scenario import corruption_summary, estimate, run_train, work_s
from tenacia.plan.sdc import SilentCorruption

DAY = 86400.0


@pytest.mark.parametrize("policy, strategy", list(itertools.product(("none", "in_band"), ("checkpoint", "live"))))
def test_closed_form_matches_the_monte_carlo(policy, strategy):
    """Expected wall time and SDC events (rate x expected wall time, Wald) within sampling error.
    The closed form is exact for one rolling-back kind or none; with several rolling-back kinds of
    different downtimes it takes their mean and counts the last cycle's checkpoint (~0.15% here)."""
    rates = {"crash": 1 / (10 * 3600), "sdc": 1 / (4 * 3600)}
    sdc = SilentCorruption(policy=policy, detect_steps=120)
    fm = failure_model(rates, Recovery(strategy=strategy), step_time_s=10.0, groups=8, sdc=sdc)
    out = simulate(20 * DAY, fm, trials=2000, seed=5)
    expected = expected_wall(20 * DAY, fm)
    sem = out.completion_s.std() / np.sqrt(out.completion_s.size)
    assert abs(out.completion_s.mean() - expected) < 4 * sem + 0.002 * expected
    corrupt = [i for i, name in enumerate(out.kinds) if name.startswith("sdc")]
    events = out.by_kind[:, corrupt].sum(axis=1)
    assert abs(events.mean() - rates["sdc"] * expected) < 4 * events.std() / np.sqrt(events.size)
    assert np.array_equal(out.by_kind.sum(axis=1), out.interruptions)


def test_a_zero_sdc_rate_leaves_the_plan_as_without_corruption(plan_from):
    """Policy 'none' at a zero rate: no overhead, and the simulation draws exactly what a failure
    model without any SDC kind draws (same seed, same completion times)."""
    plan = plan_from("deepseek-v3-report", overrides=["sdc.rate_scale=0", "montecarlo.trials=50"])
    result = run_train(plan)
    assert work_s(result.estimate, plan.sdc) == result.estimate.ideal_s
    without = FailureModel(kinds=[k for k in result.failures.kinds if k.name != "sdc"],
                           interval_s=result.failures.interval_s, write_s=result.failures.write_s)
    old = simulate(result.estimate.ideal_s, without, 50, plan.montecarlo.seed)
    assert np.array_equal(result.outcome.completion_s, old.completion_s)
    assert np.array_equal(result.outcome.interruptions, old.interruptions)
    c = result.summary()["sdc"]
    assert c["none"]["lost_days"] == c["none"]["overhead_days"] == c["events_mean"] == 0
    assert c["in_band"]["overhead_days"] > 0  # always-on, whatever the rate


@pytest.mark.parametrize("strategy", ["checkpoint", "live"])
def test_in_band_loses_less_to_corruption_than_none_at_any_positive_rate(plan_from, strategy):
    plan = plan_from("deepseek-v3-report", overrides=[f"recovery.strategy='{strategy}'"])
    est, _ = estimate(plan)
    lost = []
    for scale in (1e-3, 0.1, 1.0, 10.0, 300.0):
        c = corruption_summary(dataclasses.replace(plan, sdc=SilentCorruption(rate_scale=scale)), est)
        assert 0 < c["in_band"]["lost_days"] < c["none"]["lost_days"], (scale, c)
        assert c["in_band"]["overhead_days"] > 0 == c["none"]["overhead_days"]
        lost.append(c["none"]["lost_days"])
    assert lost == sorted(lost)
    # the break-even rate is where the two policies' expected days meet
    c = corruption_summary(plan, est)
    even = c["break_even_per_chip_year"] / c["per_chip_year"]
    at = corruption_summary(dataclasses.replace(plan, sdc=SilentCorruption(rate_scale=even)), est)
    assert at["in_band_minus_none_days"] == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("override, field, allowed", [
    ("sdc.policy='sometimes'", "sdc.policy", "'none', 'in_band'"),
    ("sdc.sample_p=0", "sdc.sample_p", "(0, 1]"),
    ("sdc.plausible_share=1.5", "sdc.plausible_share", "[0, 1]"),
    ("sdc.lemon_share=-0.1", "sdc.lemon_share", "[0, 1]"),
    ("sdc.rate_scale=-1", "sdc.rate_scale", ">= 0"),
    ("sdc.detect_steps=inf", "sdc.detect_steps", "finite"),
    ("sdc.reexec_steps=-2", "sdc.reexec_steps", ">= 0"),
    ("sdc.per_chip_year.h100=-1", "sdc.per_chip_year.h100", ">= 0"),
    ("sdc.per_chip_year.h100='often'", "sdc.per_chip_year.h100", ">= 0"),
    ("sdc.fingerprint=0.01", "sdc.fingerprint", "fingerprint_overhead"),
])
def test_bad_sdc_values_name_the_field_and_what_is_allowed(plan_from, override, field, allowed):
    with pytest.raises(ConfigError) as e:
        plan_from(overrides=[override])
    assert e.value.field == field and allowed in e.value.allowed


def test_a_rate_for_a_chip_not_in_the_catalog_is_an_error(plan_from):
    with pytest.raises(ConfigError) as e:
        run_train(plan_from(overrides=["sdc.per_chip_year.ascend-920=0.01", "montecarlo.trials=10"]))
    assert e.value.field == "sdc.per_chip_year.ascend-920" and "ascend-910c" in e.value.allowed


def test_the_r2_sdc_scenario_through_the_cli(capsys):
    assert main(["plan", "train", "-c", "r2-ascend-sdc", "--trials", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    c = out["sdc"]
    assert out["inputs"]["sdc"]["policy"] == "in_band" and out["inputs"]["recovery"]["strategy"] == "live"
    assert c["per_chip_year"] == pytest.approx(0.00744)  # the catalog's 910C assumption, 3x H100
    assert c["in_band"]["detection_steps"] == 16 and c["none"]["detection_steps"] == 300
    assert c["events_mean"] > 0 and c["in_band"]["lost_days"] < c["none"]["lost_days"]
    assert c["in_band_minus_none_days"] == pytest.approx(c["in_band"]["days"] - c["none"]["days"])
    assert "sdc-lemon" in out["reliability"]["kinds"]
    # the flags: policy none, the 910C rate at 10x H100
    assert main(["plan", "train", "-c", "r2-ascend-sdc", "--sdc-policy", "none", "--sdc-scale", "3.333",
                 "--trials", "10"]) == 0
    table = capsys.readouterr().out
    assert "policy none" in table and "none vs in_band" in table and "0.0248 per chip-year" in table
