"""Benchmark of the fleet planner: Monte Carlo speed at the seed cluster's scale, and the public
validation cases. One command:

    .venv/bin/python bench/plan.py

prints a table and writes bench/results/plan.json. The issue's bar: 50,000 chips, 60 days,
1,000 Monte Carlo trials in under 10 s on 2 cores.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tenacia import config  # noqa: E402
from tenacia.plan.inputs import build  # noqa: E402
from tenacia.plan.montecarlo import simulate  # noqa: E402
from tenacia.plan.reliability import KINDS, failure_model  # noqa: E402
from tenacia.plan.scenario import TrainPlan, estimate, run_train  # noqa: E402

DAYS = 60
TRIALS = 1000
REPEATS = 5


def plan(scenario=None, flags=(), overrides=()) -> TrainPlan:
    return config.from_dict(TrainPlan, build(scenario, list(flags), list(overrides)))


def time_monte_carlo(strategy: str, failure_scale: float) -> dict:
    """Seed cluster (30k H20 + 10k H800 + 10k H100), a 60-day failure-free run, 1,000 trials."""
    p = plan(flags=[("fleet", "seed-cluster"), ("model", "r2-guess"), ("recovery", strategy)],
             overrides=[f"recovery.failure_scale={failure_scale}"])
    est, _ = estimate(p)
    # every chip of the fleet fails and is replaced, idle ones included: 50,000 in the process
    rates = {kind: sum(g.chips * g.chip.failure_per_s(kind) for g in est.groups) for kind in KINDS}
    fm = failure_model(rates, p.recovery, est.step_time_s, est.layout.dp // est.layout.ep)
    walls, out = [], None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        out = simulate(DAYS * 86400, fm, TRIALS, seed=0)
        walls.append(time.perf_counter() - t0)
    chips = sum(g.chips for g in est.groups)
    return {"case": f"MC {strategy}, failures x{failure_scale:g}", "chips": chips, "days": DAYS,
            "trials": TRIALS, "wall_s_median": statistics.median(walls), "wall_s_max": max(walls),
            "events_simulated": int(out.interruptions.sum()), "goodput_mean": float(out.goodput.mean()),
            "mean_days": float(np.mean(out.completion_s[out.finished]) / 86400)}


def validation() -> list[dict]:
    t0 = time.perf_counter()
    ds, _ = estimate(plan("deepseek-v3-report"))
    ds_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    llama = run_train(plan("llama-3-405b-report"))
    llama_s = time.perf_counter() - t0
    sim = llama.outcome
    per_54 = float(np.mean(sim.interruptions / (sim.completion_s / 86400) * 54))
    t0 = time.perf_counter()
    r2 = plan("r2-ascend-910c")
    r2 = dataclasses.replace(r2, layout=dataclasses.replace(r2.layout, tp=0, pp=0, ep=0))
    _, fits = estimate(r2)
    search_s = time.perf_counter() - t0
    return [
        {"case": "DeepSeek-V3 H800 GPU-hours", "published": 2_664_000, "planned": ds.chip_hours,
         "error": ds.chip_hours / 2_664_000 - 1, "wall_s": ds_s},
        {"case": "Llama 3 405B MFU (16,384 H100; calibration)", "published": 400 / 989.4,
         "planned": llama.estimate.mfu_bf16, "error": llama.estimate.mfu_bf16 / (400 / 989.4) - 1, "wall_s": llama_s},
        {"case": "Llama 3 interruptions per 54 days", "published": 419, "planned": per_54,
         "error": per_54 / 419 - 1, "wall_s": llama_s},
        {"case": "Llama 3 effective training time", "published": "> 0.90",
         "planned": float(sim.goodput.mean()), "error": None, "wall_s": llama_s},
        {"case": f"layout search, R2 guess on 8,064 Ascend 910C ({fits} layouts fit)", "published": None,
         "planned": None, "error": None, "wall_s": search_s},
    ]


def _fmt(v: float | str | None) -> str:
    return "-" if v is None else v if isinstance(v, str) else f"{v:,.4g}"


def main() -> int:
    speed = [time_monte_carlo(s, f) for s in ("checkpoint", "live") for f in (1.0, 3.0)]
    checks = validation()
    console = Console(width=140)
    table = Table(title=f"bench/plan.py: Monte Carlo, {TRIALS} trials, {DAYS}-day run, median of {REPEATS}")
    for col in ("case", "chips", "wall s (median)", "wall s (max)", "failures simulated", "goodput", "mean days"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in speed:
        table.add_row(r["case"], f"{r['chips']:,}", f"{r['wall_s_median']:.3f}", f"{r['wall_s_max']:.3f}",
                      f"{r['events_simulated']:,}", f"{r['goodput_mean']:.1%}", f"{r['mean_days']:.1f}")
    console.print(table)
    table = Table(title="public cases")
    for col in ("case", "published", "planned", "error", "wall s"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for r in checks:
        table.add_row(r["case"], _fmt(r["published"]), _fmt(r["planned"]),
                      "-" if r["error"] is None else f"{r['error']:+.1%}", f"{r['wall_s']:.3f}")
    console.print(table)
    result = {
        "date": datetime.date.today().isoformat(), "command": ".venv/bin/python bench/plan.py",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "platform": platform.platform()},
        "monte_carlo": speed, "validation": checks,
    }
    out = ROOT / "bench" / "results" / "plan.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out.relative_to(ROOT)}")
    worst = max(r["wall_s_max"] for r in speed if r["case"].endswith("x1"))
    return 0 if worst < 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
