"""Resume is bit-identical: N steps straight equal N steps with kill -9s and resumes in between.

One faulty timeline visits every named kill point in turn (mid-step, between steps, after each
file of a checkpoint write, after the rename): each process is SIGKILLed at its point, the next
resumes from the newest checkpoint that verifies and is armed with the next point.
"""

import json

import pytest
import torch

from tenacia import config
from tenacia.data.dataset import prepare_data
from tenacia.data.ledger import SampleLedger
from tenacia.train.config import RunConfig

from .procs import final_weights, train_args

STEPS = "train.steps=24"
EVERY = "checkpoint.every=4"
# ten process lives of ~5 s each on a quiet 2-core machine; the limit is for a loaded one
pytestmark = pytest.mark.timeout(480)
# (kill point, step): each must fire after the previous process's resume point
KILL_CHAIN = [
    "mid_step@3",
    "between_steps@6",
    "checkpoint:model.safetensors@8",
    "checkpoint:optimizer.safetensors@12",
    "checkpoint:state.safetensors@12",
    "checkpoint:manifest.json@16",
    "checkpoint:renamed@20",
    "mid_step@22",
]


def test_kill_and_resume_is_bit_identical(tmp_path, procs):
    straight, faulty = tmp_path / "straight", tmp_path / "faulty"
    # the straight run goes beside the faulty timeline (two cores; the kill points are steps, not times)
    beside = procs.start(train_args(straight, STEPS, EVERY), log=tmp_path / "straight.log")
    for i, point in enumerate(KILL_CHAIN):
        code = procs.run(train_args(faulty, STEPS, EVERY), timeout=90, env={"TENACIA_KILL_AT": point},
                         log=tmp_path / "faulty.log")
        assert code == -9, f"kill point {point} (#{i}) did not fire: exit code {code}"
    assert procs.run(train_args(faulty, STEPS, EVERY), timeout=90, log=tmp_path / "faulty.log") == 0
    assert beside.wait(timeout=90) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    a, b = final_weights(straight), final_weights(faulty)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after kill/resume"

    events = [json.loads(line) for line in (faulty / "events.jsonl").read_text().splitlines()]
    resumed = [e["step"] for e in events if e["event"] == "resumed"]
    # Checkpoints are written in the background, so which one a kill lands after depends on
    # timing; what does not: every resume is from a whole checkpoint, never backwards, and a kill
    # after the rename of 20 (and the mid-step kill at 22) resume from 20.
    assert len(resumed) >= 5 and all(s % 4 == 0 for s in resumed), resumed
    assert resumed == sorted(resumed) and resumed[-2:] == [20, 20], resumed
    cfg = config.load(RunConfig, faulty / "config.toml")
    data = prepare_data(cfg.data, cfg.model.vocab_size)
    report = SampleLedger(faulty / "ledger.jsonl").verify(cfg.data.seed, len(data.train))
    assert report.ok and report.steps == 24, report
