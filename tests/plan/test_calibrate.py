"""Calibration from a tenacia run's event log (schema: docs/events.md)."""

import json

import pytest

from tenacia.config import ConfigError
from tenacia.plan.calibrate import read_calibration, read_link_calibration
from tenacia.plan.scenario import run_train


def write_events(run_dir, detection=(1.0, 2.0, 9.0), stall=(3.0, 4.0, 30.0), heal=(0.5, 0.7)):
    """A synthetic events.jsonl: three recovered failures, noise, and a truncated last line."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [{"t": 0.0, "event": "run_started", "source": "launcher", "step": None, "replicas": 3, "config": {}}]
    for i, d in enumerate(detection):
        lines.append({"t": 10.0 + i, "event": "failure_detected", "source": "coordinator", "step": 5 + i,
                      "kind": "crash", "replica": 1, "detection_s": d})
    for i, s in enumerate(stall):
        lines.append({"t": 11.0 + i, "event": "quorum_changed", "source": "coordinator", "step": 5 + i,
                      "quorum_id": i + 1, "members": [0, 2], "stall_s": s})
    for i, h in enumerate(heal):
        lines.append({"t": 12.0 + i, "event": "heal_done", "source": "replica:1", "step": 5 + i,
                      "replica": 1, "peer": 0, "heal_s": h, "bytes": 39_000_000})
    lines.append({"t": 20.0, "event": "step_committed", "source": "coordinator", "step": 9, "loss": 2.0,
                  "tokens": 4096, "members": [0, 1, 2], "step_time_s": 0.1})
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"t": 21.0, "event": "heal_do'
    (run_dir / "events.jsonl").write_text(text)
    return run_dir


def test_medians_of_each_measurement(tmp_path):
    cal = read_calibration(write_events(tmp_path / "run"))
    assert cal.medians == {"detection_s": 2.0, "stall_s": 4.0, "heal_s": pytest.approx(0.6)}
    assert cal.samples == {"detection_s": 3, "stall_s": 3, "heal_s": 2}


def test_calibration_replaces_the_live_recovery_inputs(tmp_path, plan_from):
    cal = read_calibration(write_events(tmp_path / "run"))
    plan = plan_from(overrides=["recovery.strategy='live'", "recovery.stall_s=600", "montecarlo.trials=50"])
    slow = run_train(plan)
    fast = run_train(plan, cal)
    assert (fast.plan.recovery.detection_s, fast.plan.recovery.stall_s) == (2.0, 4.0)
    crash_slow, crash_fast = slow.failures.kinds[0], fast.failures.kinds[0]
    assert crash_fast.downtime_s < crash_slow.downtime_s - 500
    assert fast.summary()["calibration"]["samples"]["stall_s"] == 3


def test_missing_or_empty_log_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="events.jsonl"):
        read_calibration(tmp_path / "nothing")
    (tmp_path / "quiet").mkdir()
    (tmp_path / "quiet" / "events.jsonl").write_text('{"t": 0, "event": "run_started", "source": "x", "step": null}\n')
    with pytest.raises(ConfigError, match="recovered failure"):
        read_calibration(tmp_path / "quiet")


def write_link_run(path, efficiency=0.25):
    """A slow-link run's JSON, made by hand from a chosen link efficiency: 4 members on 100 ms,
    0.1 Gbit/s links (12.5e6 bytes/s each; a ring exchange pays 2 x 3 x 50 ms = 0.3 s)."""
    rate, latency = 0.1e9 / 8, 0.3
    ddp_extra = 1e-3 * latency + 4000 / 4 / rate / efficiency  # one all-reduce per 1,000 tokens, 4,000 bytes/token
    diloco_extra = 1e-4 * latency + 40 / 4 / rate / efficiency
    arms = [
        {"strategy": "ddp", "compression": "fp32", "inner_steps": 1, "tokens_per_s_no_link": 1000.0,
         "tokens_per_s": 1 / (1 / 1000 + ddp_extra), "bytes_per_token": 4000.0, "exchanges_per_token": 1e-3},
        {"strategy": "diloco", "compression": "int8", "inner_steps": 50, "tokens_per_s_no_link": 2000.0,
         "tokens_per_s": 1 / (1 / 2000 + diloco_extra), "bytes_per_token": 40.0, "exchanges_per_token": 1e-4,
         "utilization": 0.93},
        # overlapped: hides behind compute, says nothing of the link; left out of the fit
        {"strategy": "streaming", "tokens_per_s_no_link": 1000.0, "tokens_per_s": 100.0, "bytes_per_token": 40.0},
    ]
    path.write_text(json.dumps({"link": {"rtt_ms": 100, "gbit_s": 0.1}, "members": 4, "arms": arms}))
    return path


def test_link_efficiency_fitted_from_a_measured_run(tmp_path):
    cal = read_link_calibration(write_link_run(tmp_path / "links.json"))
    assert cal.efficiency == pytest.approx(0.25)
    assert [a["used"] for a in cal.arms] == [True, True, False]
    for arm in cal.arms[:2]:
        assert arm["fitted_extra_s_per_token"] == pytest.approx(arm["extra_s_per_token"])
    assert cal.arms[1]["utilization"] == 0.93
    # a transport faster than the link rate is capped at the link
    assert read_link_calibration(write_link_run(tmp_path / "fast.json", efficiency=2.0)).efficiency == 1.0


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["arms"][0].pop("tokens_per_s_no_link"), "arms[0].tokens_per_s_no_link"),
    (lambda d: d["arms"][1].update(tokens_per_s=5000.0), "arms[1].tokens_per_s"),
    (lambda d: d["arms"][0].update(bytes=1), "arms[0].bytes"),
    (lambda d: d.update(members=0), "members"),
    (lambda d: d["link"].update(gbit_s=0), "link.gbit_s"),
    (lambda d: d.update(arms=d["arms"][2:]), "arms"),
])
def test_bad_link_calibration_names_the_field(tmp_path, edit, field):
    path = write_link_run(tmp_path / "links.json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        read_link_calibration(path)
    assert e.value.field.endswith(field)


def test_link_calibration_charges_each_collective_its_own_trips(tmp_path):
    """A direct all-gather pays one one-way trip an exchange (50 ms at 100 ms), the direct
    reduce-scatter two, gloo's ring 2 x 3: an arm measured with its own form's latency fits the
    same efficiency as the ring's; charged the ring's six trips it would fit a faster link."""
    rate, efficiency = 0.1e9 / 8, 0.4
    arms = [{"strategy": "diloco", "compression": "int2", "collective": form, "tokens_per_s_no_link": 2000.0,
             "tokens_per_s": 1 / (1 / 2000 + 1e-4 * trips * 0.05 + 10 / 4 / rate / efficiency),
             "bytes_per_token": 10.0, "exchanges_per_token": 1e-4}
            for form, trips in (("allgather", 1), ("reduce_scatter", 2), ("ring_allreduce", 6))]
    path = tmp_path / "forms.json"
    path.write_text(json.dumps({"link": {"rtt_ms": 100, "gbit_s": 0.1}, "members": 4, "arms": arms}))
    cal = read_link_calibration(path)
    assert cal.efficiency == pytest.approx(efficiency)
    assert [a["collective"] for a in cal.arms] == ["allgather", "reduce_scatter", "ring_allreduce"]
    for arm in cal.arms:
        assert arm["fitted_extra_s_per_token"] == pytest.approx(arm["extra_s_per_token"])
    wrong = json.loads(path.read_text())
    for arm in wrong["arms"]:
        arm.pop("collective")
    path.write_text(json.dumps(wrong))
    assert read_link_calibration(path).efficiency > efficiency
    wrong["arms"][0]["collective"] = "tree"
    path.write_text(json.dumps(wrong))
    with pytest.raises(ConfigError) as e:
        read_link_calibration(path)
    assert e.value.field.endswith("arms[0].collective")
