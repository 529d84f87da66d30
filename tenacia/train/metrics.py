"""``metrics.jsonl``: one JSON object per logged step of a run.

Training lines hold ``step, loss, tokens_per_s`` and, from the single-process trainer, ``lr,
grad_norm, tokens``; a replica run's leader adds ``members``. Eval lines hold ``step,
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
