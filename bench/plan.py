"""Benchmark of the fleet planner: Monte Carlo speed at the seed cluster's scale, and the public
validation cases. One command:

    .venv/bin/python bench/plan.py

prints a table and writes bench/results/plan.json. The issue's bar: 50,000 chips, 60 days,
1,000 Monte Carlo trials in under 10 s on 2 cores, and 200,000 chips working (timed too).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tenacia import config  # noqa: E402
from tenacia.plan.catalog import HARDWARE, HOURS_PER_YEAR  # noqa: E402
from tenacia.plan.inputs import build  # noqa: E402
from tenacia.plan.montecarlo import simulate  # noqa: E402
from tenacia.plan.reliability import failure_model  # noqa: E402
from tenacia.plan.scenario import TrainPlan, estimate  # noqa: E402
from tenacia.plan.validation import load_cases, run_case  # noqa: E402

DAYS = 60
TRIALS = 1000
REPEATS = 5


def plan(scenario=None, flags=(), overrides=()) -> TrainPlan:
    return config.from_dict(TrainPlan, build(scenario, list(flags), list(overrides)))


def time_monte_carlo(strategy: str, failure_scale: float, fleet: str = "seed-cluster") -> dict:
    """``fleet`` (default the seed cluster: 30k H20 + 10k H800 + 10k H100), R2's guessed model,
    a 60-day run, 1,000 trials."""
    p = plan(flags=[("fleet", fleet), ("model", "r2-guess"), ("recovery", strategy)],
             overrides=[f"recovery.failure_scale={failure_scale}"])
    est, _ = estimate(p)
    # every chip of the fleet fails and is replaced, idle ones included: 50,000 in the process
    rates = {kind: sum(g.chips * g.chip.failure_per_s(kind) for g in est.groups) for kind in HARDWARE}
    rates["software"] = sum(g.chips for g in est.groups) * p.recovery.software_per_chip_year / (HOURS_PER_YEAR * 3600)
    fm = failure_model(rates, p.recovery, est.step_time_s, est.layout.dp // est.layout.ep)
    walls, out = [], None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        out = simulate(DAYS * 86400, fm, TRIALS, seed=0)
        walls.append(time.perf_counter() - t0)
    chips = sum(g.chips for g in est.groups)
    return {"case": f"MC {strategy}, failures x{failure_scale:g}" + ("" if fleet == "seed-cluster" else f", {fleet}"),
            "chips": chips, "days": DAYS,
            "trials": TRIALS, "wall_s_median": statistics.median(walls), "wall_s_max": max(walls),
            "events_simulated": int(out.interruptions.sum()), "goodput_mean": float(out.goodput.mean()),
            "mean_days": float(np.mean(out.completion_s[out.finished]) / 86400)}


def validation() -> list[dict]:
    """Every case of `tenacia plan validate`, timed, and layout searches at two scales."""
    rows = []
    for case in load_cases():
        t0 = time.perf_counter()
        r = run_case(case)
        rows.append({"case": f"{case.set}: {case.id}", "published": case.published, "planned": r.predicted,
                     "error": r.error, "wall_s": time.perf_counter() - t0})
    for label, flags in (("R2 guess on 8,064 Ascend 910C", [("fleet", "ascend-910c-8k")]),
                         ("R2 guess on 200,000 H100", [("fleet", "h100:200000")])):
        t0 = time.perf_counter()
        _, fits = estimate(plan(flags=[("model", "r2-guess"), *flags]))
        rows.append({"case": f"layout search, {label} ({fits} layouts estimated)", "published": None,
                     "planned": None, "error": None, "wall_s": time.perf_counter() - t0})
    return rows


def _fmt(v: float | str | None) -> str:
    return "-" if v is None else v if isinstance(v, str) else f"{v:,.4g}"


def main() -> int:
    speed = [time_monte_carlo(s, f) for s in ("checkpoint", "live") for f in (1.0, 3.0)]
    speed += [time_monte_carlo(s, 1.0, "h100:200000") for s in ("checkpoint", "live")]
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
    software = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()}
    out = write_results("plan", {"software": software, "monte_carlo": speed, "validation": checks},
                        ROOT / "bench" / "results" / "plan.json")
    console.print(f"wrote {out.relative_to(ROOT)}")
    worst = max(r["wall_s_max"] for r in speed if r["case"].endswith("x1"))  # the seed cluster at catalog rates
    return 0 if worst < 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
