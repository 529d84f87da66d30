"""Run report: from a run's event log and metrics to goodput, per-fault recovery times and a PNG
timeline.

Inputs (``RUN_DIR``): ``events.jsonl`` (schema in docs/events.md) and ``metrics.jsonl`` (lines
with ``step, loss, lr, tokens_per_s, tokens, t`` and lines with ``step, eval_loss``). A truncated
or garbled line (a writer killed mid-line) is skipped and counted. Outputs: ``analyze`` returns
the report as a dict, ``write`` stores it as ``RUN_DIR/report.json`` and draws
``RUN_DIR/timeline.png`` (and, for a mixture of experts, ``RUN_DIR/experts.png``: ``experts.py``).

Definitions (docs/fault-model.md repeats them):
- Commits: the ``step_committed`` events; a log without any (the single-process trainer) uses
  the training lines of ``metrics.jsonl`` instead (``commits_from`` says which), one per line.
- Useful steps: the committed steps of the run's final lineage, one per step number. A resume
  from a disk checkpoint at step s drops the steps above s committed before it (they are lost);
  a step committed twice without a resume counts once. A commit without ``tokens`` (a step
  decided by a new leader after a takeover) counts the tokens of the commit before it, since the
  global batch is constant.
- Span: from the first to the last committed step. Start-up before the first commit and the
  final eval/save after the last are paid alike by a fault-free run, so they are left out. When a
  fault or recovery event comes after the last commit (the run ended stalled), the span runs to
  the end of the log instead.
- Fault-free rate: split the commits into consecutive windows of ``WINDOW_STEPS`` steps; a window
  is fault-free when every commit in it has the run's full membership and no disruptive event
  (``DISRUPTIVE``) has its time inside it. Its rate is its committed tokens over its duration
  (evals and checkpoint saves inside it included: a fault-free run pays them too). The
  fault-free rate is the median of these rates; with no such window it falls back to the median
  over full-membership commits, then over all commits (``fault_free.source`` says which).
- Goodput: useful tokens committed after the first commit over (fault-free rate x span).
- Per fault (each ``fault_injected``, and each ``failure_detected`` with no injected fault
  before it): detection = ``failure_detected.detection_s``, else its time minus the fault's,
  else its ``silence_s`` (a declaration more than ``DETECT_WITHIN_S`` after a fault is not
  matched to it; a fault of the coordinating replica with no declaration is detected by the
  next ``coordinator_changed``); stall = the survivors' longest time without a committed step, from the
  last commit before the fault to the commit that holds the replica again (or the next fault,
  at most 60 s later), else the first ``quorum_changed.stall_s``; healing = ``heal_done.heal_s``;
  back = time from the fault to the first step committed with the replica among its members
  after it was declared failed.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from ..storage import atomic_write_json, read_jsonl
from .numbers import is_numeric, numbers

WINDOW_STEPS = 10
DETECT_WITHIN_S = 30.0  # a failure declared later than this after a fault is a fault of its own
DISRUPTIVE = frozenset({
    "fault_injected", "failure_detected", "quorum_changed", "step_discarded", "heal_started",
    "heal_done", "replica_restarted", "coordinator_changed", "resumed",
})
STATES = ("alive", "healing", "out")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _stats(values: list[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    return {"n": len(vals), "median": _median(vals), "max": max(vals) if vals else None}


def commits_from_metrics(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``step_committed`` events made from the training lines of ``metrics.jsonl``, for runs whose
    event log has none (the single-process trainer): one per logged line, its tokens the growth
    of the cumulative ``tokens`` since the previous line of the same lineage (a line whose step
    is not above the previous one's follows a resume, which drops the lines at or above it)."""
    out: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for m in metrics:
        if not isinstance(m.get("tokens"), (int, float)) or not isinstance(m.get("t"), (int, float)) \
                or m.get("step") is None or m.get("loss") is None:
            continue
        while kept and kept[-1]["step"] >= m["step"]:
            kept.pop()
        prev = kept[-1]["tokens"] if kept else 0
        kept.append(m)
        out.append({"t": m["t"], "event": "step_committed", "source": "metrics", "step": m["step"],
                    "loss": m["loss"], "tokens": m["tokens"] - prev})
    return out


def lineage(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The final lineage's commits in step order, each with ``tokens`` filled, and how many
    committed steps a resume threw away."""
    kept: dict[int, dict[str, Any]] = {}
    lost = 0
    last_tokens = 0
    for e in events:
        if e["event"] == "resumed" and e.get("step") is not None:
            drop = [s for s in kept if s > e["step"]]
            lost += len(drop)
            for s in drop:
                del kept[s]
        elif e["event"] == "step_committed" and e.get("step") is not None:
            tokens = e.get("tokens")
            tokens = last_tokens if tokens is None else tokens
            last_tokens = tokens
            kept.setdefault(e["step"], {**e, "tokens": tokens})
    return [kept[s] for s in sorted(kept)], lost


def fault_free_rate(commits: list[dict[str, Any]], events: list[dict[str, Any]],
                    full: int) -> dict[str, Any]:
    """Median committed tokens/s over fault-free windows (definition in the module docstring)."""
    times = sorted(e["t"] for e in events if e["event"] in DISRUPTIVE)

    def clean(t0: float, t1: float) -> bool:
        return not any(t0 < t <= t1 for t in times)

    def full_members(c: dict[str, Any]) -> bool:
        return c.get("members") is None or len(c["members"]) >= full

    rates = []
    for i in range(WINDOW_STEPS, len(commits), WINDOW_STEPS):
        window = commits[i - WINDOW_STEPS + 1:i + 1]
        t0, t1 = commits[i - WINDOW_STEPS]["t"], commits[i]["t"]
        if t1 > t0 and clean(t0, t1) and all(full_members(c) for c in window):
            rates.append(sum(c["tokens"] for c in window) / (t1 - t0))
    if rates:
        return {"tokens_per_s": statistics.median(rates), "windows": len(rates), "source": "windows"}
    pairs = list(zip(commits, commits[1:], strict=False))
    for source, keep in (("full-membership steps", full_members), ("all steps", lambda c: True)):
        rates = [b["tokens"] / (b["t"] - a["t"]) for a, b in pairs if b["t"] > a["t"] and keep(b)]
        if rates:
            return {"tokens_per_s": statistics.median(rates), "windows": len(rates), "source": source}
    return {"tokens_per_s": None, "windows": 0, "source": "no commits"}


def _first(events: list[dict[str, Any]], t0: float, t1: float, kind: str, **match: Any) -> dict[str, Any] | None:
    for e in events:
        if e["event"] == kind and t0 <= e["t"] < t1 and all(e.get(k) == v for k, v in match.items()):
            return e
    return None


def faults(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per fault with its detection, stall, healing and time back to full strength.
    Stall and back are read from every commit in time order (also the ones a later resume
    throws away: they were committed when they happened)."""
    timeline = [e for e in events if e["event"] == "step_committed"]
    injected = [e for e in events if e["event"] == "fault_injected" and not is_numeric(e)]
    detected = [e for e in events if e["event"] == "failure_detected"]
    used: set[int] = set()
    roots: list[dict[str, Any]] = []
    for f in injected:
        later = [g["t"] for g in injected if g["t"] > f["t"] and g.get("replica") == f.get("replica")]
        end = min(later, default=math.inf)
        d = next((d for d in detected if id(d) not in used and f["t"] <= d["t"] < min(end, f["t"] + DETECT_WITHIN_S)
                  and (f.get("replica") is None or d.get("replica") == f.get("replica"))), None)
        if d is not None:
            used.add(id(d))
        roots.append({"fault": f, "detect": d, "end": end})
    for d in detected:
        if id(d) not in used:
            roots.append({"fault": None, "detect": d, "end": math.inf})
    out = []
    for root in sorted(roots, key=lambda r: (r["fault"] or r["detect"])["t"]):
        f, d, end = root["fault"], root["detect"], root["end"]
        start = (f or d)["t"]
        replica = (f or d).get("replica")
        if replica is None and d is not None:
            replica = d.get("replica")
        rec: dict[str, Any] = {
            "t": start, "step": (f or d).get("step"), "replica": replica,
            "kind": f.get("kind") if f else f"unplanned {d.get('kind')}",
            "detected_as": d.get("kind") if d else None, "detection_s": None,
            "stall_s": None, "heal_s": None, "heal_bytes": None, "back_s": None, "takeover_s": None,
        }
        if d is None and f is not None and replica is not None and _coordinator_at(events, start) == replica:
            takeover = _first(events, start, min(end, start + DETECT_WITHIN_S), "coordinator_changed")
            if takeover is not None:  # the leader itself failed: a survivor taking over detects it
                rec["detected_as"], rec["detection_s"] = "coordinator takeover", takeover["t"] - start
        if d is not None:
            if d.get("detection_s") is not None:
                rec["detection_s"] = d["detection_s"]
            elif f is not None:
                rec["detection_s"] = d["t"] - f["t"]
            else:
                rec["detection_s"] = d.get("silence_s")
        coord = _first(events, start, end, "coordinator_changed")
        if coord is not None and f is not None and "coordinator" in str(f.get("kind")):
            rec["takeover_s"] = coord.get("takeover_s")
        if replica is not None:
            heal = _first(events, start, end, "heal_done", replica=replica)
            if heal is not None:
                rec["heal_s"], rec["heal_bytes"] = heal.get("heal_s"), heal.get("bytes")
            left = _first(events, start, end, "failure_detected", replica=replica)
            if left is not None:
                back = next((c for c in timeline if left["t"] < c["t"] < end
                             and replica in (c.get("members") or [])), None)
                if back is not None:
                    rec["back_s"] = back["t"] - start
        rec["stall_s"] = _stall(timeline, events, start, end, rec["back_s"])
        out.append(rec)
    return out


def _coordinator_at(events: list[dict[str, Any]], t: float) -> int | None:
    """The replica coordinating at time ``t`` (the last ``coordinator_changed`` before it)."""
    changes = [e for e in events if e["event"] == "coordinator_changed" and e["t"] <= t]
    return changes[-1].get("coordinator") if changes else None


def _stall(timeline: list[dict[str, Any]], events: list[dict[str, Any]], start: float, end: float,
           back_s: float | None) -> float | None:
    """The longest time without a committed step from the last commit before the fault to the
    commit that holds the replica again (else the next fault, at most 60 s on). A step that was
    already under way can still commit just after a fault; the stall comes after it."""
    horizon = min(end, start + 60.0, start + back_s if back_s is not None else math.inf)
    before = [c["t"] for c in timeline if c["t"] <= start][-1:]
    times = before + [c["t"] for c in timeline if start < c["t"] <= horizon]
    if len(times) >= 2:
        return max(b - a for a, b in zip(times, times[1:], strict=False))
    qc = _first(events, start, end, "quorum_changed")  # no commits to read: the writer's figure
    return qc.get("stall_s") if qc is not None else None


def membership(events: list[dict[str, Any]], t_end: float) -> dict[str, list[tuple[float, float, str]]]:
    """Per replica, the (start, end, state) segments with state one of ``STATES``: alive from a
    quorum that holds it (or its ``heal_done``), healing from ``heal_started``, out when a quorum
    leaves it out or it is declared failed."""
    ids: set[int] = set()
    for e in events:
        ids.update(e.get("members") or [])
        if e["event"] in ("heal_started", "heal_done", "failure_detected", "fault_injected") \
                and isinstance(e.get("replica"), int):
            ids.add(e["replica"])
    state: dict[int, tuple[float, str]] = {}
    segments: dict[str, list[tuple[float, float, str]]] = {str(r): [] for r in sorted(ids)}

    def move(r: int, t: float, new: str) -> None:
        old = state.get(r)
        if old is not None and old[1] == new:
            return
        if old is not None and t > old[0]:
            segments[str(r)].append((old[0], t, old[1]))
        state[r] = (t, new)

    for e in events:
        kind, t = e["event"], e["t"]
        if kind == "quorum_changed":
            members = set(e.get("members") or [])
            for r in ids:
                if r in members:
                    move(r, t, "alive")
                elif r in state and state[r][1] != "healing":
                    move(r, t, "out")
        elif kind == "heal_started" and e.get("replica") in ids:
            move(e["replica"], t, "healing")
        elif kind == "heal_done" and e.get("replica") in ids:
            move(e["replica"], t, "alive")
        elif kind == "failure_detected" and e.get("replica") in ids:
            move(e["replica"], t, "out")
    for r, (t, s) in state.items():
        if t_end > t:
            segments[str(r)].append((t, t_end, s))
    return segments


def load(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(events sorted by time, metrics in file order, unreadable lines skipped per file)."""
    run_dir = Path(run_dir)
    events, bad_events = read_jsonl(run_dir / "events.jsonl")
    metrics, bad_metrics = read_jsonl(run_dir / "metrics.jsonl")
    events = sorted((e for e in events if "event" in e and isinstance(e.get("t"), (int, float))),
                    key=lambda e: e["t"])
    if not events:
        raise FileNotFoundError(f"no events in {run_dir / 'events.jsonl'}: is this a tenacia run directory?")
    return events, metrics, {"events": bad_events, "metrics": bad_metrics}


def analyze(run_dir: str | Path) -> dict[str, Any]:
    """The whole report of a run directory as a JSON-ready dict."""
    events, metrics, skipped = load(run_dir)
    started = [e for e in events if e["event"] == "run_started"]
    replicas = max((int(e.get("replicas") or 1) for e in started), default=1)
    t_start = started[0]["t"] if started else events[0]["t"]
    t_end = max([events[-1]["t"]] + [m["t"] for m in metrics if isinstance(m.get("t"), (int, float))])
    from_metrics = not any(e["event"] == "step_committed" for e in events)
    if from_metrics:
        events = sorted(events + commits_from_metrics(metrics), key=lambda e: e["t"])
    commits, lost = lineage(events)
    rate = fault_free_rate(commits, events, replicas)
    last_fault = max((e["t"] for e in events if e["event"] in DISRUPTIVE), default=-math.inf)
    span_end = t_end if commits and last_fault > commits[-1]["t"] else (commits[-1]["t"] if commits else 0.0)
    span = span_end - commits[0]["t"] if len(commits) > 1 else 0.0
    useful = sum(c["tokens"] for c in commits[1:])
    goodput = useful / (rate["tokens_per_s"] * span) if rate["tokens_per_s"] and span > 0 else None
    per_fault = faults(events)
    count = {k: sum(1 for e in events if e["event"] == k) for k in (
        "fault_injected", "failure_detected", "quorum_changed", "step_discarded", "heal_done",
        "replica_restarted", "coordinator_changed", "checkpoint_saved", "resumed")}
    evals = [m for m in metrics if m.get("eval_loss") is not None]
    eval_events = [e for e in events if e["event"] == "eval" and e.get("eval_loss") is not None]
    final_eval = (evals or eval_events or [{}])[-1].get("eval_loss")
    return {
        "run_dir": str(run_dir),
        "replicas": replicas,
        "wall_s": t_end - t_start,
        "span_s": span,
        "steps_committed": len(commits),
        "commits_from": "metrics.jsonl" if from_metrics else "events.jsonl",
        "last_step": commits[-1]["step"] if commits else None,
        "useful_tokens": useful,
        "fault_free": rate,
        "goodput": goodput,
        "counts": {"faults": len(per_fault), "failures_detected": count["failure_detected"],
                   "quorum_changes": count["quorum_changed"], "discarded_steps": count["step_discarded"],
                   "lost_to_resume": lost, "heals": count["heal_done"], "restarts": count["replica_restarted"],
                   "coordinator_changes": count["coordinator_changed"],
                   "checkpoints": count["checkpoint_saved"], "resumes": count["resumed"]},
        "faults": per_fault,
        "summary": {k: _stats([f[k] for f in per_fault]) for k in ("detection_s", "stall_s", "heal_s", "back_s")},
        "final_eval_loss": final_eval,
        "skipped_lines": skipped,
        "t_start": t_start,
        "t_end": t_end,
        "membership": membership(events, t_end),
        "numbers": numbers(events),
    }


def write(run_dir: str | Path) -> dict[str, Any]:
    """Analyze ``run_dir``, write ``report.json`` and ``timeline.png`` there (and ``experts.png``
    for a mixture of experts); returns the report."""
    from .experts import draw_experts, imbalance_by_layer
    from .plot import draw_timeline

    run_dir = Path(run_dir)
    report = analyze(run_dir)
    events, metrics, _ = load(run_dir)
    draw_timeline(report, metrics, events, run_dir / "timeline.png")
    if (experts := imbalance_by_layer(metrics)) is not None:
        draw_experts(experts, run_dir / "experts.png")
    atomic_write_json(run_dir / "report.json", report, indent=1)
    return report
