"""Subcommand `report`: print a run's goodput and recovery times, write report.json and
timeline.png into the run directory, and whether the run proves itself (``check.py``: the sample
ledger exactly once, the replicas' final states equal); ``--check`` makes that the exit status."""

from __future__ import annotations

import argparse
from typing import Any

from . import numbers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="goodput, fault detection/stall/healing times and a PNG timeline of a run")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory holding events.jsonl (and metrics.jsonl)")
    p.add_argument("--json", action="store_true", help="print report.json to stdout instead of tables")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless the sample ledger verifies (every sample once) and every replica's final "
                        "state fingerprint is equal; 2 if the run directory cannot be checked")
    p.set_defaults(handler=cmd_report)


def _s(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.3f} {unit}".strip()


def render(report: dict[str, Any]) -> None:
    """Print ``report`` (from ``summary.analyze``) as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    gp = report["goodput"]
    rate = report["fault_free"]
    head = Table(title=f"tenacia report: {report['run_dir']}", show_header=False)
    rows = [
        ("goodput", "n/a" if gp is None else f"{100 * gp:.1f}%"),
        ("useful tokens", f"{report['useful_tokens']:,}"),
        ("fault-free rate", "n/a" if rate["tokens_per_s"] is None
         else f"{rate['tokens_per_s']:,.0f} tokens/s (median of {rate['windows']} {rate['source']})"),
        ("training span / wall", f"{report['span_s']:.1f} s / {report['wall_s']:.1f} s"),
        ("steps committed", f"{report['steps_committed']} (last step {report['last_step']})"),
        ("replicas", str(report["replicas"])),
        ("final eval loss", "-" if report["final_eval_loss"] is None else f"{report['final_eval_loss']:.4f}"),
    ]
    rows += [(k.replace("_", " "), str(v)) for k, v in report["counts"].items()]
    skipped = sum(report["skipped_lines"].values())
    if skipped:
        rows.append(("unreadable lines skipped", str(report["skipped_lines"])))
    for key, value in rows:
        head.add_row(key, value)
    console.print(head)

    if report["faults"]:
        table = Table(title="faults (seconds; stall = survivors without a committed step)")
        for col in ("at", "step", "kind", "replica", "detected as", "detection", "stall", "healing", "replica back"):
            table.add_column(col, justify="right")
        for f in report["faults"]:
            table.add_row(f"{f['t'] - report['t_start']:.1f}", str(f["step"] if f["step"] is not None else "-"),
                          f["kind"], str(f["replica"] if f["replica"] is not None else "-"),
                          f["detected_as"] or "-", _s(f["detection_s"]), _s(f["stall_s"]),
                          _s(f["heal_s"]), _s(f["back_s"]))
        console.print(table)
        summary = report["summary"]
        console.print("median / max: " + "; ".join(
            f"{k.removesuffix('_s')} {_s(v['median'])} / {_s(v['max'])}" for k, v in summary.items() if v["n"]))
    numbers.render(report, console)


def cmd_report(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from .summary import write

    run_dir = Path(args.run_dir)
    if not (run_dir / "events.jsonl").exists():
        print(f"tenacia report: {run_dir / 'events.jsonl'} does not exist; give the run directory of a "
              "tenacia train run (its train.run_dir)", file=sys.stderr)
        return 2
    from .check import check

    report = write(run_dir)
    proof = check(run_dir)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        render(report)
        experts = " and experts.png" if (run_dir / "experts.png").exists() else ""
        print(f"wrote {run_dir / 'report.json'} and {run_dir / 'timeline.png'}{experts}")
    print("\n".join(proof.lines()), file=sys.stderr if args.json else sys.stdout)
    if not args.check:
        return 0
    return 2 if proof.unchecked else (0 if proof.ok else 1)
