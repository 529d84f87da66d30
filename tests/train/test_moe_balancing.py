"""Auxiliary-loss-free balancing works (issue 17): 200 steps of ``moe-tiny``, the expert load
max/mean (per step and MoE layer, averaged over the layers and the last 50 steps) is at most 1.3
with the bias updating and above 1.6 with it frozen (``model.moe.bias_update_speed=0``). Minutes
on 2 cores: under the slow marker.

Measured on 2 shared, loaded cores (docs/benchmarks.md, "Balancing moe-tiny", 2026-12-03, the
same overrides run through the Trainer): the preset (bias speed 0.01, sequence balance weight
1e-3) 1.282 updating (1.277 with ``train.seed=1``), 2.493 frozen; this test printed the same
1.282 and 2.493 (570 s and 504 s). Earlier: speed 1e-3 (the old preset) 2.73 over steps 81-130;
at weight 1e-4, speeds 0.006: 1.309, 0.01: 1.301, 0.02: 1.331, 0.05: 1.428. What limits it: each
step's token composition (8 windows of 128 tokens), not the bias's speed or rule; the margin
under 1.3 is small (two seeds run)."""

from __future__ import annotations

import json

import pytest

from tenacia import config
from tenacia.train.config import RunConfig
from tenacia.train.trainer import Trainer

STEPS, LAST = 200, 50


def last_imbalance(root, speed: str | None) -> float:
    overrides = ["model.preset=moe-tiny", f"train.steps={STEPS}", "train.log_every=1", "data.seq_len=128",
                 "data.max_bytes=400000", "train.batch_size=8", "train.micro_batch_size=8", "train.eval_every=0",
                 "train.eval_batches=1", "train.progress=false", "device.threads=1", "checkpoint.every=0",
                 "checkpoint.background=false", f'train.run_dir="{root / "run"}"',
                 f'data.cache_dir="{root / "cache"}"']
    if speed is not None:
        overrides.append(f"model.moe.bias_update_speed={speed}")
    Trainer(config.load(RunConfig, None, overrides)).fit()
    lines = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    ratios = [r["expert_imbalance"] for r in lines if "expert_imbalance" in r][-LAST:]
    assert len(ratios) == LAST
    return sum(ratios) / LAST


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("speed", "holds"), [(None, lambda r: r <= 1.3), ("0", lambda r: r > 1.6)],
                         ids=["bias-updating", "bias-frozen"])
def test_the_bias_balances_the_experts(tmp_path, speed, holds):
    ratio = last_imbalance(tmp_path, speed)
    print(f"moe-tiny, bias_update_speed={speed or 'preset'}: max/mean over the last {LAST} steps = {ratio:.3f}")
    assert holds(ratio), ratio
