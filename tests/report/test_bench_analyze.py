"""bench/peers/analyze.py: peers' worker records -> a tenacia event log the report reads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "peers"))
from analyze import write_run  # noqa: E402

from tenacia.report.summary import analyze  # noqa: E402


def step(t, replica, s, committed=True, participants=2, pid=None):
    return {"t": t, "event": "worker_step", "replica": replica, "pid": pid or 100 + replica, "step": s,
            "committed": committed, "participants": participants, "tokens": 10, "loss": 1.0}


def test_a_torchft_like_crash_is_detected_healed_and_counted(tmp_path):
    recs = [{"t": 0.0, "event": "worker_started", "replica": r, "pid": 100 + r} for r in (0, 1)]
    for s in range(1, 21):  # both replicas commit a step every second
        recs += [step(float(s), 0, s), step(float(s) + 0.01, 1, s)]
    recs.append(step(20.6, 0, 21, committed=False))  # replica 1 killed at 20.5: the step fails
    recs.append({"t": 22.0, "event": "worker_started", "replica": 1, "pid": 201})
    for s in range(21, 31):
        recs.append(step(21.0 + s - 20, 0, s, participants=1 if s < 24 else 2))
        if s >= 24:
            recs.append(step(21.0 + s - 20 + 0.01, 1, s, pid=201))
    inj = [{"t": 20.5, "kind": "kill", "replica": 1, "pid": 101}]
    write_run(tmp_path, sorted(recs, key=lambda r: r["t"]), inj, replicas=2, t_launch=-1.0, t_end=40.0)
    r = analyze(tmp_path)
    assert r["counts"]["discarded_steps"] == 1  # step 21 failed once, then was redone
    (f,) = r["faults"]
    assert f["kind"] == "kill" and f["replica"] == 1
    assert f["detection_s"] == pytest.approx(0.1)  # the survivor's failed step
    assert f["stall_s"] == pytest.approx(22.0 - 20.01)  # last commit before to first after
    assert f["heal_s"] == pytest.approx(25.01 - 22.0)  # replacement start to its first commit
    assert f["back_s"] == pytest.approx(25.01 - 20.5)


def test_a_torchrun_like_restart_resumes_and_loses_steps(tmp_path):
    recs = [{"t": 0.0, "event": "worker_started", "replica": r, "pid": 100 + r} for r in (0, 1)]
    for s in range(1, 16):
        recs += [step(float(s), 0, s), step(float(s), 1, s)]
    recs.append({"t": 15.7, "event": "worker_sigterm", "replica": 0, "pid": 100})
    for r in (0, 1):
        recs.append({"t": 18.0, "event": "worker_started", "replica": r, "pid": 300 + r})
        recs.append({"t": 19.0, "event": "worker_resumed", "replica": r, "pid": 300 + r, "step": 10})
    for s in range(11, 21):
        recs += [step(9.0 + s, 0, s, pid=300), step(9.0 + s, 1, s, pid=301)]
    inj = [{"t": 15.5, "kind": "kill", "replica": 1, "pid": 101}]
    write_run(tmp_path, sorted(recs, key=lambda r: r["t"]), inj, replicas=2, t_launch=-1.0, t_end=40.0)
    r = analyze(tmp_path)
    assert r["counts"]["resumes"] == 1 and r["counts"]["lost_to_resume"] == 5
    assert r["steps_committed"] == 20
    (f,) = r["faults"]
    assert f["detection_s"] == pytest.approx(0.2)  # the launcher's SIGTERM to a survivor
    assert f["stall_s"] == pytest.approx(20.0 - 15.0)  # last commit before the kill to the first after
    assert f["back_s"] == pytest.approx(20.0 - 15.5)
