"""PNG charts of plan results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def completion_chart(series: list[tuple[str, np.ndarray, float]], deadline_days: float | None,
                     path: str | Path, title: str = "Completion time") -> Path:
    """Empirical CDF of completion days per scenario; ``series``: (label, completion days per
    trial, with inf for unfinished, failure-free days). A dotted line marks each failure-free time."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for i, (label, days, ideal) in enumerate(series):
        color = f"C{i}"
        done = np.sort(days[np.isfinite(days)])
        frac = np.arange(1, done.size + 1) / days.size
        ax.step(done, frac, where="post", color=color, label=label)
        ax.axvline(ideal, color=color, linestyle=":", linewidth=1)
    if deadline_days:
        ax.axvline(deadline_days, color="black", linestyle="--", linewidth=1, label=f"deadline {deadline_days:.0f} d")
    ax.set_xlabel("days to finish training (dotted: failure-free)")
    ax.set_ylabel("P(finished by then)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def goodput_chart(series: list[tuple[str, list[float], list[float]]], path: str | Path,
                  title: str = "Goodput against failure rate") -> Path:
    """Mean goodput per scenario against the per-chip failure rate (failures per chip-year,
    averaged over the fleet; log x). ``series``: (label, rates, goodputs)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for i, (label, rates, goodput) in enumerate(series):
        ax.plot(rates, goodput, marker="o", color=f"C{i}", label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("failures per chip-year (crash + hang + silent corruption)")
    ax.set_ylabel("effective training time ratio")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
