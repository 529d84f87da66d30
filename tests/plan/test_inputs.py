"""Inputs that never hang: every rate, time and count finite and in range with an error naming
the field; a fleet that cannot make progress is reported as such, quickly; a missing field is a
ConfigError, never a traceback."""

import time

import pytest

from tenacia.config import ConfigError
from tenacia.plan.catalog import REQUIRED, load_catalog
from tenacia.plan.montecarlo import simulate
from tenacia.plan.reliability import (
    FailureKind,
    FailureModel,
    Recovery,
    expected_wall,
    failure_model,
)
from tenacia.plan.scenario import run_train

from .test_cli import tenacia

DAY = 86400.0


@pytest.mark.parametrize("override, field", [
    ("recovery.failure_scale=inf", "recovery.failure_scale"),
    ("recovery.restart_s=nan", "recovery.restart_s"),
    ("recovery.checkpoint_write_s=inf", "recovery.checkpoint_write_s"),
    ("assumptions.fp8_speedup=inf", "assumptions.fp8_speedup"),
    ("montecarlo.deadline_days=inf", "montecarlo.deadline_days"),
    ("montecarlo.horizon=inf", "montecarlo.horizon"),
    ("tokens=inf", "tokens"),
    ("model.total_params_b=inf", "model.total_params_b"),
    ("fleet.groups=[{chip='h100'}]", "fleet.groups[0].count"),
    ("fleet.groups=[{count=8}]", "fleet.groups[0].chip"),
    ("montecarlo.trials=1000000000", "montecarlo.trials"),
    ("recovery.software_per_chip_year=inf", "recovery.software_per_chip_year"),
    ("recovery.site_scale=-1", "recovery.site_scale"),
    ("recovery.rate_band='worst'", "recovery.rate_band"),
    ("layout.year=1999", "layout.year"),
    ("layout.year=inf", "layout.year"),
    ("layout.cp=-2", "layout.cp"),
    ("layout.zero=4", "layout.zero"),
])
def test_non_finite_or_missing_inputs_name_the_field(plan_from, override, field):
    with pytest.raises(ConfigError) as e:
        plan_from(overrides=[override])
    assert e.value.field == field


def test_a_chip_with_an_infinite_failure_rate_is_rejected(tmp_path):
    text = (tmp_path / "c.toml")
    text.write_text('[chips.bad]\nname = "bad"\n' + "\n".join(
        f'{k} = {{ value = {"inf" if k == "crash_per_chip_year" else 1}, source = "t", uncertain = true }}'
        for k in REQUIRED))
    with pytest.raises(ConfigError) as e:
        load_catalog(text)
    assert e.value.field.endswith("chips.bad.crash_per_chip_year") and "finite" in e.value.allowed


def test_cli_never_hangs_and_never_prints_a_traceback(tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('groups = [{ chip = "h100" }]\n')
    for args, field in ((["--failure-scale", "inf"], "recovery.failure_scale"),
                        (["--fleet", str(fleet)], "fleet.groups[0].count")):
        proc = tenacia("train", *args, check=False)
        assert proc.returncode == 2 and f"'{field}'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("strategy", ["checkpoint", "live"])
def test_a_fleet_failing_every_few_seconds_never_finishes_and_says_so_at_once(plan_from, strategy):
    plan = plan_from(overrides=["recovery.failure_scale=1e6", f"recovery.strategy='{strategy}'"])
    t0 = time.perf_counter()
    result = run_train(plan)
    assert time.perf_counter() - t0 < 10
    sim = result.summary()["simulation"]
    assert result.failures.summary()["fleet_mtbf_h"] * 3600 < 1  # a failure every fraction of a second
    assert sim["finished"] == 0 and sim["p_by_deadline"] == 0
    assert sim["never_finishes"].startswith("never finishes")


def test_closed_form_progress_check():
    crash = dict(name="crash", rollback=True, downtime_s=600.0)
    # rollbacks every 10 s with a 10-minute restart: no checkpoint cycle ever completes
    fm = FailureModel(kinds=[FailureKind(rate_per_s=0.1, **crash)], interval_s=60, write_s=10)
    assert expected_wall(DAY, fm) > 1e20 * DAY
    assert simulate(DAY, fm, trials=50).stuck
    # live failures that each cost 2 minutes, every minute: the fleet is always recovering
    live = FailureModel(kinds=[FailureKind(name="crash", rate_per_s=1 / 60, rollback=False, downtime_s=120)],
                        interval_s=float("inf"), write_s=10)
    assert expected_wall(DAY, live) == float("inf")
    assert simulate(DAY, live, trials=50).stuck
    # and a healthy fleet's closed form is what the simulation gives (within sampling error)
    fm = failure_model({"crash": 1 / 7200, "hang": 0.0, "sdc": 0.0}, Recovery(), step_time_s=10, groups=1)
    out = simulate(20 * DAY, fm, trials=1000, seed=3)
    assert not out.stuck and out.completion_s.mean() == pytest.approx(expected_wall(20 * DAY, fm), rel=0.01)


def test_a_run_too_large_to_simulate_is_an_error_naming_the_budget():
    fm = FailureModel(kinds=[FailureKind(name="crash", rate_per_s=1 / 30, rollback=True, downtime_s=0.0)],
                      interval_s=5, write_s=1)
    with pytest.raises(ConfigError) as e:
        simulate(60 * DAY, fm, trials=1000)
    assert e.value.field == "montecarlo.max_events"


@pytest.mark.parametrize("override, field", [
    ("tpot_ms=inf", "tpot_ms"),
    ("precision='int4'", "precision"),
    ("demand.tokens_per_day=nan", "demand.tokens_per_day"),
    ("step.expert_imbalance=0.5", "step.expert_imbalance"),
    ("step.layer_overhead_us=inf", "step.layer_overhead_us"),
    ("step.comm_overlap=1.5", "step.comm_overlap"),
    ("step.hbm_efficiency=0", "step.hbm_efficiency"),
    ("step.moe_layer_overhead_us=-1", "step.moe_layer_overhead_us"),
    ("step.moe_layer_overhead_us=inf", "step.moe_layer_overhead_us"),
    ("step.moe_layer_kernel_us=-1", "step.moe_layer_kernel_us"),
    ("step.step_overhead_us=-1", "step.step_overhead_us"),
    ("step.step_overhead_us=inf", "step.step_overhead_us"),
    ("speculation.draft_tokens=0", "speculation.draft_tokens"),
    ("speculation.accepted=nan", "speculation.accepted"),
    ("speculation.accepted=0.5", "speculation.accepted"),
    ("attention_precision='int8'", "attention_precision"),
])
def test_bad_serving_inputs_name_the_field(override, field):
    from tenacia import config
    from tenacia.plan.serving import ServePlan

    with pytest.raises(ConfigError) as e:
        config.load(ServePlan, None, [override])
    assert e.value.field == field
