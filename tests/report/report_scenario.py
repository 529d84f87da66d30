"""Synthetic run directories with known answers for the report tests.

``two_faults`` is a 4-replica run: 400 steps of 400 tokens every 0.1 s (4,000 tokens/s when no
fault is active), a kill of replica 2 after step 100 (detected 0.4 s later, survivors stalled
0.7 s, healed in 0.5 s) and a 10 s hang of replica 1 after step 200 (detected in 1.0 s, stall
1.2 s, healed in 0.3 s). The events file ends in a truncated line, as after a crash.
"""

from __future__ import annotations

import json
from pathlib import Path

T0 = 1000.0
TOKENS = 400
FULL = [0, 1, 2, 3]


def commit_time(step: int) -> float:
    if step <= 100:
        return T0 + 2.0 + 0.1 * (step - 1)
    if step <= 200:
        return T0 + 12.6 + 0.1 * (step - 101)
    return T0 + 23.7 + 0.1 * (step - 201)


def members_at(step: int) -> list[int]:
    t = commit_time(step)
    if T0 + 12.5 <= t < T0 + 15.55:
        return [0, 1, 3]
    if T0 + 23.6 <= t < T0 + 33.35:
        return [0, 2, 3]
    return FULL


def _e(t: float, event: str, source: str = "coordinator", step: int | None = None, **fields) -> dict:
    return {"t": round(t, 6), "event": event, "source": source, "step": step, **fields}


def two_faults(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    ev = [_e(T0, "run_started", "launcher", replicas=4, config={}),
          _e(T0 + 1.5, "quorum_changed", step=0, quorum_id=1, members=FULL, stall_s=None)]
    for step in range(1, 401):
        stall = {101: 0.7, 201: 1.2}.get(step)
        ev.append(_e(commit_time(step), "step_committed", step=step, loss=5.0 - step / 100, tokens=TOKENS,
                     members=members_at(step), step_time_s=0.1, stall_s=stall))
    ev += [
        _e(T0 + 12.0, "fault_injected", "chaos", step=100, kind="kill", replica=2, params={}),
        _e(T0 + 12.4, "failure_detected", step=None, kind="crash", replica=2, silence_s=0.45),
        _e(T0 + 12.4, "step_discarded", step=101, reason="replica 2 lost (crash)"),
        _e(T0 + 12.5, "quorum_changed", step=100, quorum_id=2, members=[0, 1, 3], stall_s=0.6),
        _e(T0 + 13.0, "replica_restarted", "launcher", replica=2, attempt=1, backoff_s=0.5),
        _e(T0 + 15.0, "heal_started", "replica:2", step=130, replica=2, peer=0),
        _e(T0 + 15.5, "heal_done", "replica:2", step=135, replica=2, peer=0, heal_s=0.5, bytes=39_000_000),
        _e(T0 + 15.55, "quorum_changed", step=135, quorum_id=3, members=FULL, stall_s=None),
        _e(T0 + 22.55, "fault_injected", "chaos", step=200, kind="hang", replica=1, params={"seconds": 10}),
        _e(T0 + 23.55, "failure_detected", step=None, kind="hang", replica=1, detection_s=1.0),
        _e(T0 + 23.55, "step_discarded", step=201, reason="replica 1 lost (hang)"),
        _e(T0 + 23.6, "quorum_changed", step=200, quorum_id=4, members=[0, 2, 3], stall_s=1.05),
        _e(T0 + 33.0, "heal_started", "replica:1", step=293, replica=1, peer=3),
        _e(T0 + 33.3, "heal_done", "replica:1", step=296, replica=1, peer=3, heal_s=0.3, bytes=39_000_000),
        _e(T0 + 33.35, "quorum_changed", step=296, quorum_id=5, members=FULL, stall_s=None),
        _e(T0 + 43.7, "eval", "replica:0", step=400, eval_loss=1.25),
        _e(T0 + 44.0, "run_finished", "replica:0", step=400),
    ]
    ev.sort(key=lambda e: e["t"])
    lines = [json.dumps(e) for e in ev]
    (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n" + '{"t": 1044.1, "event": "step_comm')
    metrics = []
    for step in range(10, 401, 10):
        metrics.append({"t": commit_time(step), "step": step, "loss": 5.0 - step / 100, "lr": 1e-3,
                        "tokens_per_s": 4000.0, "tokens": step * TOKENS})
        if step in (200, 400):
            metrics.append({"t": commit_time(step) + 0.05, "step": step, "eval_loss": 3.25 if step == 200 else 1.25})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return run_dir


def resumed(run_dir: Path) -> Path:
    """One replica: steps 1-30, every process lost, resume from the step-20 checkpoint, 21-40."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ev = [_e(T0, "run_started", "trainer", replicas=1)]
    t = T0 + 1
    for step in range(1, 31):
        ev.append(_e(t, "step_committed", "trainer", step=step, loss=4.0, tokens=100))
        t += 0.1
    t += 5.0
    ev.append(_e(t, "resumed", "trainer", step=20, path="checkpoints/step-20"))
    for step in range(21, 41):
        t += 0.1
        ev.append(_e(t, "step_committed", "trainer", step=step, loss=3.0, tokens=100))
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    return run_dir
