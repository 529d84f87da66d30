"""A deepseek-v3 model trains like any tenacia model: picked by ``model.preset``, its expert loads
and balancing biases in the metrics, the biases moved after every step and restored on resume."""

from __future__ import annotations

import json

import pytest
import torch

from tenacia import checkpoint as ckpt
from tenacia.model import DeepSeekV3
from tenacia.train.trainer import Trainer

from .moe_run import run_config


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe")
    trainer = Trainer(run_config(root, 6))
    trainer.fit()
    return root, trainer


def test_the_preset_picks_the_family_and_the_metrics_carry_loads_and_biases(straight):
    root, trainer = straight
    assert isinstance(trainer.model, DeepSeekV3)
    lines = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6]
    for r in train:
        assert len(r["expert_loads"]) == 2 and len(r["expert_bias"]) == 2  # the MoE layer, the MTP block
        assert sum(r["expert_loads"][0]) == 2 * 4 * 32 * 2  # 2 steps x 4 samples x 32 tokens x top-2
        assert r["expert_imbalance"] >= 1
    assert trainer.model.expert_biases().abs().sum() > 0  # moved every step
    assert trainer.model.expert_loads().sum() == 0  # and the counts cleared


def test_resume_restores_the_biases_bit_for_bit(straight, tmp_path):
    _, reference = straight
    first = Trainer(run_config(tmp_path, 6))
    for _ in range(3):
        first.step_once()
    first.save_checkpoint()
    first.checkpoints.wait()
    second = Trainer(run_config(tmp_path, 6))
    assert second.resume() and second.step == 3
    assert torch.equal(second.model.expert_biases(), first.model.expert_biases())
    second.fit()
    fingerprint = lambda t: ckpt.state_fingerprint(t.step, t.sampler.state_dict(), t.model, t.optimizer)  # noqa: E731
    assert torch.equal(second.model.expert_biases(), reference.model.expert_biases())
    assert fingerprint(second) == fingerprint(reference)
