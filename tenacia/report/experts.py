"""Expert balance of a mixture-of-experts run, from ``metrics.jsonl`` alone (no torch).

Each training line of a MoE run (one process or replicas) holds ``expert_loads``: the tokens each
routed expert of each MoE layer received over the steps since the previous line (layers x
experts). A layer's imbalance at a line is max/mean of those loads: 1 is perfect balance, E (the
number of experts) is every token sent to one. Taken over the line's window, it is at most the
per-step ratio averaged over the window (``expert_imbalance`` on the same line): the window smooths
step-to-step swings. ``experts.png`` draws it per layer over steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def imbalance_by_layer(metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``{"steps": [s...], "layers": [[max/mean at each step] per layer]}`` from the lines that
    carry ``expert_loads``, in step order; None for a run without them (a dense model)."""
    lines = sorted((m for m in metrics if isinstance(m.get("expert_loads"), list) and "step" in m),
                   key=lambda m: m["step"])
    if not lines:
        return None
    n_layers = len(lines[0]["expert_loads"])
    layers: list[list[float | None]] = [[] for _ in range(n_layers)]
    for m in lines:
        for i in range(n_layers):
            loads = m["expert_loads"][i] if i < len(m["expert_loads"]) else []
            total = sum(loads)
            layers[i].append(max(loads) * len(loads) / total if total else None)
    return {"steps": [m["step"] for m in lines], "layers": layers}


def draw_experts(series: dict[str, Any], path: Path) -> None:
    """Write the per-layer imbalance of ``series`` (``imbalance_by_layer``) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for i, ratios in enumerate(series["layers"]):
        points = [(s, r) for s, r in zip(series["steps"], ratios, strict=True) if r is not None]
        if points:
            ax.plot(*zip(*points, strict=True), lw=1.2, label=f"MoE layer {i}")
    ax.axhline(1.0, color="#888888", ls=":", lw=1, label="perfect balance")
    ax.set_xlabel("step")
    ax.set_ylabel("expert load max / mean")
    ax.set_title("expert imbalance per MoE layer (loads summed over each metrics window)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
