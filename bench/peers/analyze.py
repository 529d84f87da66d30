"""Turn the peers' worker records and the bench's injections into a tenacia event log, so that
`tenacia.report` measures every arm with the same definitions (see tenacia/report.py).

Derived events:
- ``step_committed``: one per step of each generation (a torchrun restart from a checkpoint
  starts a new generation and a ``resumed`` event); members = the replicas that committed it,
  t = the last of their commit times, tokens = the sum of theirs.
- ``step_discarded`` for a step some replica logged as not committed before it was (if ever)
  committed: torchft redoes a failed step under the same number; ``quorum_changed`` when the
  members of consecutive committed steps differ.
- ``failure_detected`` per injected fault: the first sign of it seen by another replica (a step
  not committed, fewer participants, a SIGTERM from the launcher, an error) before the next
  fault; detection_s = that time minus the injection time. A hang that nobody notices has none.
- ``heal_started``/``heal_done`` for a replacement process: its start, and its first commit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return sorted(out, key=lambda r: r["t"])


def _e(t: float, event: str, step: int | None = None, **fields: Any) -> dict[str, Any]:
    return {"t": t, "event": event, "source": "bench", "step": step, **fields}


def commits(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(step_committed/step_discarded/resumed events, quorum_changed events) in time order."""
    gen, last_resume = 0, None
    steps: dict[tuple[int, int], list[dict[str, Any]]] = {}
    out: list[dict[str, Any]] = []
    for r in records:
        if r["event"] == "worker_resumed":
            if last_resume is None or r["t"] - last_resume > 2.0:
                gen += 1
                out.append(_e(r["t"], "resumed", step=r["step"], path="checkpoint"))
            last_resume = r["t"]
        elif r["event"] == "worker_step":
            steps.setdefault((gen, r["step"]), []).append(r)
    for (_, step), recs in steps.items():
        done = [r for r in recs if r["committed"]]
        t_done = max((r["t"] for r in done), default=float("inf"))
        failed = [r for r in recs if not r["committed"] and r["t"] <= t_done]
        if failed:  # thrown away (and, when it was then committed, redone)
            out.append(_e(min(r["t"] for r in failed), "step_discarded", step=step, reason="not committed"))
        if done:
            out.append(_e(t_done, "step_committed", step=step, members=sorted({r["replica"] for r in done}),
                          tokens=sum(r["tokens"] for r in done), loss=sum(r["loss"] for r in done) / len(done)))
    out.sort(key=lambda e: e["t"])
    quorums, members, qid = [], None, 0
    for e in out:
        if e["event"] == "step_committed" and e["members"] != members:
            qid += 1
            members = e["members"]
            quorums.append(_e(e["t"], "quorum_changed", step=e["step"], quorum_id=qid, members=members))
    return out, quorums


def recoveries(records: list[dict[str, Any]], injections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """failure_detected and heal events for each injection."""
    out = []
    for i, f in enumerate(injections):
        end = injections[i + 1]["t"] if i + 1 < len(injections) else float("inf")
        target = f["replica"]
        participants: dict[int, int] = {}
        for r in records:
            if r["event"] == "worker_step" and r["t"] <= f["t"]:
                participants[r["replica"]] = r["participants"]
        for r in records:
            if not f["t"] < r["t"] < end or r["replica"] == target:
                continue
            sign = (r["event"] in ("worker_sigterm", "worker_error")
                    or (r["event"] == "worker_step" and (not r["committed"]
                        or r["participants"] < participants.get(r["replica"], r["participants"]))))
            if sign:
                out.append(_e(r["t"], "failure_detected", kind="crash" if f["kind"] == "kill" else "hang",
                              replica=target, detection_s=r["t"] - f["t"], seen_by=r["replica"]))
                break
        if f["kind"] != "kill":
            continue
        start = next((r for r in records if r["event"] == "worker_started" and r["replica"] == target
                      and f["t"] < r["t"] < end), None)
        if start is None:
            continue
        out.append(_e(start["t"], "heal_started", replica=target, peer=None, pid=start["pid"]))
        first = next((r for r in records if r["event"] == "worker_step" and r["pid"] == start["pid"]
                      and r["committed"]), None)
        if first is not None:
            out.append(_e(first["t"], "heal_done", replica=target, peer=None, heal_s=first["t"] - start["t"],
                          bytes=None, restart_s=start["t"] - f["t"]))
    return out


def write_run(run_dir: Path, records: list[dict[str, Any]], injections: list[dict[str, Any]],
              replicas: int, t_launch: float, t_end: float) -> None:
    """``run_dir/events.jsonl`` and ``metrics.jsonl`` of one peer arm, cut at ``t_end``."""
    records = [r for r in records if r["t"] <= t_end]
    steps, quorums = commits(records)
    events = [_e(t_launch, "run_started", replicas=replicas)]
    events += [_e(f["t"], "fault_injected", kind=f["kind"], replica=f["replica"], params=f.get("params", {}))
               for f in injections if f["t"] <= t_end]
    events += steps + quorums + recoveries(records, [f for f in injections if f["t"] <= t_end])
    events.append(_e(t_end, "run_finished", step=None))
    events.sort(key=lambda e: e["t"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    metrics = [{"t": e["t"], "step": e["step"], "loss": e["loss"], "tokens": e["tokens"]}
               for e in steps if e["event"] == "step_committed"]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
