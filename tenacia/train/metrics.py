"""``metrics.jsonl``: one JSON object per logged step of a run.

Training lines hold ``step, loss, tokens_per_s`` and, from the single-process trainer, ``lr,
grad_norm, tokens``; a replica run's leader adds ``members``; a mixture-of-experts model adds
``expert_loads``, ``expert_imbalance`` and ``expert_bias`` (``expert_metrics``). Eval lines hold ``step,
eval_loss``. Every line carries its wall time ``t``. Lines are appended by
``tenacia.storage.append_jsonl`` (whole lines, never interleaved); ``tenacia report`` reads them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..storage import append_jsonl

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """The writer of a run directory's ``metrics.jsonl``."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE

    def write(self, **record: Any) -> dict[str, Any]:
        record = {"t": time.time(), **record}
        append_jsonl(self.path, record)
        return record


def expert_metrics(step_loads: list[list[list[int]]], biases: list[list[float]]) -> dict[str, Any]:
    """The MoE fields of a training line, from the loads of each step since the last line (steps x
    layers x experts) and the biases now (layers x experts): ``expert_loads`` (tokens per expert
    and layer over those steps), ``expert_imbalance`` (a layer's max/mean load in one step,
    averaged over steps and layers: 1 is perfect balance), ``expert_bias``."""
    layers = len(biases)
    summed = [[sum(step[layer][e] for step in step_loads) for e in range(len(biases[layer]))]
              for layer in range(layers)]
    ratios = [max(loads) * len(loads) / sum(loads) for step in step_loads for loads in step if sum(loads)]
    return {"expert_loads": summed, "expert_imbalance": sum(ratios) / len(ratios) if ratios else None,
            "expert_bias": [[round(b, 6) for b in layer] for layer in biases]}
