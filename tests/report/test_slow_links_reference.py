"""bench/slow_links.py ``--reference-from``: an earlier result's loopback ddp taken as this run's
reference, only for the same workload and ddp settings, its evals read from its run directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
from slow_links import TWINS, stored_reference  # noqa: E402
from slow_links_settings import use_settings  # noqa: E402

ARGS = {"replicas": 4, "preset": "micro", "seq_len": 64, "batch": 8, "tokens": 409600, "eval_every": 204800,
        "eval_batches": 8}


def stored(tmp_path: Path, loss: float = 2.5) -> Path:
    settings = use_settings(BENCH / "slow_links_settings_16x.json", TWINS)
    where = tmp_path / "slow_links-20261205-000000"
    run = where / "links" / "ref-tenacia" / "run"
    run.mkdir(parents=True)
    events = [{"t": 1.0, "event": "step_committed", "step": 50, "tokens": 204800},
              {"t": 1.1, "event": "eval", "step": 50, "eval_loss": 3.0},
              {"t": 2.0, "event": "step_committed", "step": 100, "tokens": 204800},
              {"t": 2.1, "event": "eval", "step": 100, "eval_loss": 2.5}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    where.with_suffix(".json").write_text(json.dumps({
        "args": ARGS, "settings": {"ddp": settings["ddp"]},
        "links": {"reference": {"tokens": 409600, "eval_loss": loss, "tokens_per_s": 1000.0}}}))
    return where


def test_an_earlier_reference_is_taken_with_its_evals_for_the_same_workload(tmp_path):
    ref = stored_reference(argparse.Namespace(**ARGS, reference_from=stored(tmp_path)))
    assert ref["eval_loss"] == 2.5 and ref["evals_by_step"] == {50: 3.0, 100: 2.5}


def test_another_workload_or_a_run_directory_that_is_not_the_json_is_refused(tmp_path):
    where = stored(tmp_path)
    with pytest.raises(SystemExit, match="tokens"):
        stored_reference(argparse.Namespace(**{**ARGS, "tokens": 819200}, reference_from=where))
    other = stored(tmp_path / "other", loss=2.4)
    with pytest.raises(SystemExit, match="last eval"):
        stored_reference(argparse.Namespace(**ARGS, reference_from=other))
