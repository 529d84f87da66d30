"""`tenacia report` on synthetic run directories whose right answers are known."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from report_scenario import T0, commit_time, resumed, two_faults

from tenacia.report.summary import analyze, write

ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return two_faults(tmp_path / "run")


def test_goodput_is_useful_tokens_over_the_fault_free_rate_times_the_span(run):
    r = analyze(run)
    assert r["replicas"] == 4
    assert r["steps_committed"] == 400 and r["last_step"] == 400
    assert r["useful_tokens"] == 399 * 400
    assert r["fault_free"]["tokens_per_s"] == pytest.approx(4000.0, rel=1e-6)
    assert r["fault_free"]["source"] == "windows"
    assert r["span_s"] == pytest.approx(commit_time(400) - commit_time(1))
    # 399 step intervals of 0.1 s would take 39.9 s; the two faults cost 0.6 s and 1.1 s more.
    assert r["goodput"] == pytest.approx(39.9 / 41.6, rel=1e-6)
    assert r["wall_s"] == pytest.approx(44.0)
    assert r["final_eval_loss"] == 1.25
    assert r["skipped_lines"] == {"events": 1, "metrics": 0}  # the truncated last line


def test_each_fault_gets_its_detection_stall_and_healing(run):
    r = analyze(run)
    kill, hang = r["faults"]
    assert (kill["kind"], kill["replica"], kill["detected_as"]) == ("kill", 2, "crash")
    assert kill["detection_s"] == pytest.approx(0.4)  # detection time minus injection time
    assert kill["stall_s"] == pytest.approx(0.7)  # the longest gap between commits around it
    assert kill["heal_s"] == 0.5 and kill["heal_bytes"] == 39_000_000
    assert kill["back_s"] == pytest.approx(3.6)  # first commit holding replica 2 again
    assert (hang["kind"], hang["replica"], hang["detected_as"]) == ("hang", 1, "hang")
    assert hang["detection_s"] == 1.0  # the event's own detection_s wins
    assert hang["stall_s"] == pytest.approx(1.2)
    assert hang["heal_s"] == 0.3
    assert hang["back_s"] == pytest.approx(10.85)
    assert r["counts"] == {"faults": 2, "failures_detected": 2, "quorum_changes": 5, "discarded_steps": 2,
                           "lost_to_resume": 0, "heals": 2, "restarts": 1, "coordinator_changes": 0,
                           "checkpoints": 0, "resumes": 0}
    assert r["summary"]["detection_s"]["max"] == 1.0


def test_membership_lanes_follow_quorums_and_heals(run):
    lanes = analyze(run)["membership"]
    assert set(lanes) == {"0", "1", "2", "3"}
    got = [(round(a - T0, 2), round(b - T0, 2), s) for a, b, s in lanes["2"]]
    assert got == [(1.5, 12.4, "alive"), (12.4, 15.0, "out"), (15.0, 15.5, "healing"), (15.5, 44.0, "alive")]
    assert [s for _, _, s in lanes["0"]] == ["alive"]


def test_a_resume_drops_the_steps_after_its_checkpoint(tmp_path):
    r = analyze(resumed(tmp_path / "run"))
    assert r["counts"]["lost_to_resume"] == 10 and r["counts"]["resumes"] == 1
    assert r["steps_committed"] == 40
    assert r["useful_tokens"] == 39 * 100
    assert r["goodput"] < 0.5  # 6 s of waste in a 9 s span


def test_an_unplanned_failure_is_a_fault_too(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ev = [{"t": T0, "event": "run_started", "source": "launcher", "step": None, "replicas": 2},
          {"t": T0 + 1, "event": "failure_detected", "source": "coordinator", "step": None,
           "kind": "crash", "replica": 1, "silence_s": 0.3}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    (f,) = analyze(run)["faults"]
    assert f["kind"] == "unplanned crash" and f["detection_s"] == 0.3


def test_write_produces_json_and_a_png(run):
    report = write(run)
    saved = json.loads((run / "report.json").read_text())
    assert saved["goodput"] == pytest.approx(report["goodput"])
    png = (run / "timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(run / "timeline.png").shape
    assert width > 1000 and height > 500


@pytest.mark.timeout(60)
def test_cli_prints_the_report_and_rejects_a_wrong_directory(run, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, COLUMNS="160")
    ok = subprocess.run([sys.executable, "-m", "tenacia", "report", str(run)], capture_output=True, text=True,
                        env=env, timeout=50)
    assert ok.returncode == 0, ok.stderr
    assert "95.9%" in ok.stdout and "hang" in ok.stdout and "timeline.png" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "tenacia", "report", str(tmp_path / "nope")], capture_output=True,
                         text=True, env=env, timeout=50)
    assert bad.returncode == 2 and "events.jsonl" in bad.stderr


def test_a_single_process_run_is_read_from_its_metrics(tmp_path):
    """The plain trainer logs no step_committed: commits come from metrics.jsonl lines (cumulative
    tokens every 10 steps), and a resume drops the lines it rolled back."""
    run = tmp_path / "run"
    run.mkdir()
    ev = [{"t": T0, "event": "run_started", "source": "trainer", "step": 0, "replicas": 1},
          {"t": T0 + 9.5, "event": "resumed", "source": "trainer", "step": 20, "path": "checkpoints/step-20"}]
    lines = [(T0 + 1, 10), (T0 + 2, 20), (T0 + 3, 30)]  # killed after step 30, resumed at 20
    lines += [(T0 + 10, 30), (T0 + 11, 40), (T0 + 12, 50)]
    metrics = [{"t": t, "step": s, "loss": 3.0, "lr": 1e-3, "tokens_per_s": 1000.0, "tokens": s * 100}
               for t, s in lines]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    r = analyze(run)
    assert r["commits_from"] == "metrics.jsonl"
    assert r["steps_committed"] == 5 and r["last_step"] == 50
    assert r["counts"]["lost_to_resume"] == 1
    assert r["useful_tokens"] == 4 * 1000  # steps 10-50 of the final lineage, after the first line
    assert r["fault_free"]["tokens_per_s"] == pytest.approx(1000.0)
    assert r["goodput"] == pytest.approx(4000 / (1000 * 11))  # 7 s lost to the crash and resume
    write(run)  # no replica lanes to draw: the timeline is still made
    assert (run / "timeline.png").stat().st_size > 10_000


def _log(run: Path, events: list[dict]) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    base = {"source": "coordinator", "step": None}
    (run / "events.jsonl").write_text("".join(json.dumps({**base, **e}) + "\n" for e in events))
    return run


def _steady(n: int, members: list[int]) -> list[dict]:
    """n commits of 100 tokens, one a second from T0 + 1."""
    return [{"t": T0 + 1 + i, "event": "step_committed", "step": i + 1, "tokens": 100, "members": members}
            for i in range(n)]


def test_a_run_that_ends_stalled_is_charged_to_its_end(tmp_path):
    ev = [{"t": T0, "event": "run_started", "replicas": 2}] + _steady(21, [0, 1])
    ev += [{"t": T0 + 22, "event": "fault_injected", "kind": "kill", "replica": 1},
           {"t": T0 + 41, "event": "run_finished"}]
    r = analyze(_log(tmp_path / "run", ev))
    assert r["span_s"] == pytest.approx(40.0)  # first commit at T0+1 to the end of the log
    assert r["goodput"] == pytest.approx(0.5)  # 20 useful steps of 1 s in 40 s


def test_the_coordinators_own_fault_is_detected_by_the_takeover(tmp_path):
    ev = [{"t": T0, "event": "run_started", "replicas": 2},
          {"t": T0 + 0.5, "event": "coordinator_changed", "coordinator": 0, "takeover_s": None}]
    ev += _steady(30, [0, 1])
    ev += [{"t": T0 + 10.2, "event": "fault_injected", "kind": "hang", "replica": 0},
           {"t": T0 + 11.0, "event": "coordinator_changed", "coordinator": 1, "takeover_s": 0.8}]
    (f,) = analyze(_log(tmp_path / "run", sorted(ev, key=lambda e: e["t"])))["faults"]
    assert f["detected_as"] == "coordinator takeover" and f["detection_s"] == pytest.approx(0.8)


def test_a_much_later_failure_is_not_pinned_on_an_earlier_fault(tmp_path):
    ev = [{"t": T0, "event": "run_started", "replicas": 2}] + _steady(60, [0, 1])
    ev += [{"t": T0 + 5.5, "event": "fault_injected", "kind": "kill", "replica": 1},
           {"t": T0 + 45.5, "event": "failure_detected", "kind": "hang", "replica": 1, "silence_s": 0.9}]
    kill, later = analyze(_log(tmp_path / "run", sorted(ev, key=lambda e: e["t"])))["faults"]
    assert kill["detection_s"] is None
    assert later["kind"] == "unplanned hang" and later["detection_s"] == 0.9
