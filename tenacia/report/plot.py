"""The run timeline PNG: loss over wall time with fault and recovery markers above, one lane per
replica showing when it was alive, healing or out below. Drawn with matplotlib's Agg backend
(no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"alive": "#4caf50", "healing": "#ff9800", "out": "#d0d0d0"}


def draw_timeline(report: dict[str, Any], metrics: list[dict[str, Any]], events: list[dict[str, Any]],
                  path: Path) -> None:
    """Write the timeline of ``report`` (from ``tenacia.report.analyze``) to ``path``. The loss
    curve comes from ``metrics.jsonl``, else from the ``loss`` of the committed steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    t0 = report["t_start"]
    lanes = report["membership"]
    fig, (ax_loss, ax_lanes) = plt.subplots(
        2, 1, sharex=True, figsize=(11, 4.5 + 0.35 * len(lanes)),
        gridspec_kw={"height_ratios": [3, 0.6 + 0.3 * max(len(lanes), 1)]})

    train = [(m["t"] - t0, m["loss"]) for m in metrics if m.get("loss") is not None and "t" in m]
    if not train:
        train = [(e["t"] - t0, e["loss"]) for e in events
                 if e["event"] == "step_committed" and isinstance(e.get("loss"), (int, float))]
    evals = [(m["t"] - t0, m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None and "t" in m]
    if train:
        ax_loss.plot(*zip(*train, strict=True), color="#1f77b4", lw=1.2, label="train loss")
    if evals:
        ax_loss.plot(*zip(*evals, strict=True), "o", color="#9467bd", ms=5, label="eval loss")
    planned = [f for f in report["faults"] if not f["kind"].startswith("unplanned")]
    for i, f in enumerate(planned):
        x = f["t"] - t0
        ax_loss.axvline(x, color="#d62728", ls="--", lw=1, label="fault" if i == 0 else None)
        who = f"r{f['replica']}" if f["replica"] is not None else ""
        ax_loss.annotate(f"{f['kind']} {who}".strip(), (x, 1), xycoords=("data", "axes fraction"),
                         xytext=(2, -2), textcoords="offset points", fontsize=7, color="#d62728",
                         rotation=90, va="top")
        back = f["back_s"] if f["back_s"] is not None else f["stall_s"]
        if back is not None:
            ax_loss.axvline(x + back, color="#2ca02c", ls=":", lw=1.2,
                            label="replica back" if i == 0 else None)
    for i, f in enumerate(f for f in report["faults"] if f["kind"].startswith("unplanned")):
        ax_loss.axvline(f["t"] - t0, color="#ff7f0e", ls=":", lw=0.8,
                        label="failure with no injected fault" if i == 0 else None)
    ax_loss.set_ylabel("loss")
    gp = report["goodput"]
    ax_loss.set_title(f"{report['run_dir']}: {report['steps_committed']} steps, "
                      f"{report['counts']['faults']} faults, goodput "
                      + ("n/a" if gp is None else f"{100 * gp:.1f}%"))
    if train or evals or report["faults"]:
        ax_loss.legend(loc="upper right", fontsize=8)
    ax_loss.grid(alpha=0.3)

    names = list(lanes)
    for y, name in enumerate(names):
        bars = {s: [] for s in COLORS}
        for start, end, state in lanes[name]:
            bars[state].append((start - t0, end - start))
        for state, spans in bars.items():
            if spans:
                ax_lanes.broken_barh(spans, (y - 0.35, 0.7), color=COLORS[state])
        for f in report["faults"]:
            if str(f["replica"]) == name:
                unplanned = f["kind"].startswith("unplanned")
                ax_lanes.plot(f["t"] - t0, y, "." if unplanned else "x", color="#ff7f0e" if unplanned else "#d62728",
                              ms=8, mew=2)
    ax_lanes.set_yticks(range(len(names)), [f"replica {n}" for n in names])
    ax_lanes.set_ylim(-0.6, len(names) - 0.4)
    ax_lanes.invert_yaxis()
    ax_lanes.set_xlabel("seconds since the run started")
    ax_lanes.legend(handles=[Patch(color=c, label=s) for s, c in COLORS.items()], loc="upper right",
                    fontsize=8, ncol=3, bbox_to_anchor=(1.0, -0.35 if len(names) < 3 else -0.2))
    ax_lanes.set_xlim(0, max(report["t_end"] - t0, 1e-3))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
