"""The report's expert balance: per-layer max/mean of the loads in metrics.jsonl, and its plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tenacia.report.experts import imbalance_by_layer
from tenacia.report.summary import write

T0 = 1_700_000_000.0


def _run(tmp_path: Path, metrics: list[dict]) -> Path:
    run = tmp_path / "run"
    run.mkdir(parents=True)
    ev = [{"t": T0, "event": "run_started", "source": "trainer", "step": 0, "replicas": 1}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return run


def _line(step: int, loads: list[list[int]]) -> dict:
    return {"t": T0 + step, "step": step, "loss": 3.0, "lr": 1e-3, "tokens_per_s": 1000.0, "tokens": step * 100,
            "expert_loads": loads, "expert_imbalance": 1.0, "expert_bias": [[0.0] * len(x) for x in loads]}


def test_imbalance_is_max_over_mean_per_layer_in_step_order():
    metrics = [_line(20, [[1, 1, 1, 1], [0, 0, 0, 0]]), {"step": 10, "eval_loss": 3.0},
               _line(10, [[4, 0, 0, 0], [2, 2, 0, 0]])]
    series = imbalance_by_layer(metrics)
    assert series["steps"] == [10, 20]
    assert series["layers"] == [[4.0, 1.0], [2.0, None]]  # no tokens: no ratio
    assert imbalance_by_layer([_line(10, [[1]]) | {"expert_loads": None}]) is None


def test_the_report_draws_experts_png_for_a_moe_run_only(tmp_path):
    moe = _run(tmp_path / "moe", [_line(s, [[s, 10, 10, 10], [10, 10, 10, 10]]) for s in range(10, 60, 10)])
    write(moe)
    png = (moe / "experts.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    dense = _run(tmp_path / "dense", [{k: v for k, v in _line(10, [[1]]).items() if not k.startswith("expert")}])
    write(dense)
    assert not (dense / "experts.png").exists()


@pytest.mark.parametrize("module", ["tenacia.report.experts"])
def test_the_report_reads_no_torch(module):
    import subprocess
    import sys

    code = f"import sys, {module}; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
