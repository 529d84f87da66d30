"""bench/slow_links_tune.py's rule and bench/slow_links_quotas.py's steal share, on hand-built rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from slow_links_arms import member_speeds, solo_rate  # noqa: E402
from slow_links_quotas import steal_share  # noqa: E402
from slow_links_tune import select  # noqa: E402


def row(arm, lr, seed, loss, outer=(None, None), **kw):
    return {"arm": arm, "lr": lr, "min_lr_ratio": 0.1, "outer_lr": outer[0], "outer_momentum": outer[1],
            "seed": seed, "eval_loss": loss, **kw}


def test_ddp_takes_the_lowest_mean_over_its_three_seeds_not_its_best_seed():
    rows = [row("ddp", 5e-3, 1, 2.50), row("ddp", 5e-3, 2, 2.90), row("ddp", 5e-3, 3, 2.90),  # mean 2.7667
            row("ddp", 3e-3, 1, 2.60), row("ddp", 3e-3, 2, 2.70), row("ddp", 3e-3, 3, 2.80),  # mean 2.70
            row("ddp", 8e-3, 1, 2.00), row("ddp", 8e-3, 2, 2.00)]  # best, but not run on seed 3: not counted
    best = select(rows)["ddp"]
    assert best["lr"] == 3e-3 and best["mean"] == pytest.approx(2.70)
    assert best["losses"] == {1: 2.60, 2: 2.70, 3: 2.80}


def test_levers_are_recorded_but_never_selected_and_old_rows_count_as_seed_1():
    rows = [{k: v for k, v in row("diloco", 2e-3, 1, 3.0, (0.7, 0.9)).items() if k != "seed"},
            row("diloco", 2e-3, 1, 2.0, (0.7, 0.9), inner_steps=25),
            row("diloco", 2e-3, 1, 2.5, (0.7, 0.9), extra=["replicas.outer.fragments=1"]),
            row("diloco", 3e-3, 1, 3.2, (1.0, 0.0)), row("diloco", 1e-3, 1, None, (1.0, 0.0))]
    best = select(rows)
    assert best["diloco"]["lr"] == 2e-3 and best["diloco"]["mean"] == pytest.approx(3.0)
    assert best["diloco-int8"] == best["diloco"]
    assert best["localsgd"]["lr"] == 3e-3 and (best["localsgd"]["outer_lr"], best["localsgd"]["outer_momentum"]) == (1, 0)


def test_steal_share_is_the_steal_column_over_all_time_between_two_snapshots():
    # user nice system idle iowait irq softirq steal
    assert steal_share([100, 0, 20, 500, 0, 0, 0, 10], [160, 0, 30, 520, 0, 0, 0, 20]) == pytest.approx(10 / 100)
    assert steal_share([1] * 8, [1] * 8) == 0.0


def test_member_speeds_are_each_members_median_tokens_over_compute_seconds_after_the_first_round():
    def step(tokens, compute, members=(0, 3)):
        return {"members": list(members), "member_tokens": tokens, "compute_s": compute}

    steps = [step([1, 1], [100.0, 100.0]), step([600, 300], [2.0, 3.0]), step([600, 300], [3.0, 2.0]),
             step([900, 300], [3.0, 3.0])]
    assert member_speeds(steps) == {"0": 300.0, "3": 100.0}  # medians of (300, 200, 300) and (100, 150, 100)
    assert member_speeds([*steps, step([1, 1, 1], [1.0, 1.0, 1.0], members=(0, 3, 4))]) is None  # membership changed


def test_a_solo_rate_is_its_tokens_over_time_between_its_first_and_last_training_lines(tmp_path):
    lines = [{"t": 100.0, "step": 10, "tokens": 5120, "tokens_per_s": 9e9}, {"t": 100.5, "eval_loss": 3.0},
             {"t": 101.0, "step": 20, "tokens": 10240, "tokens_per_s": 1.0},
             {"t": 104.0, "step": 30, "tokens": 15360, "tokens_per_s": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert solo_rate(tmp_path) == pytest.approx(10240 / 4.0)  # not the median of the lines' own rates
