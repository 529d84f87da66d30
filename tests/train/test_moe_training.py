"""A deepseek-v3 model trains like any tenacia model: picked by ``model.preset``, its expert loads
and balancing biases in the metrics, the biases moved after every step and restored on resume."""

from __future__ import annotations

import json

import pytest
import torch

from tenacia import checkpoint as ckpt
from tenacia import config
from tenacia.model import DeepSeekV3
from tenacia.train.config import RunConfig
from tenacia.train.trainer import Trainer

# moe-tiny shrunk to seconds: 2 layers (1 dense, 1 MoE of 8 experts) plus the MTP module.
SMALL_MOE = ["model.preset=moe-tiny", "model.vocab_size=512", "model.dim=64", "model.n_layers=2",
             "model.n_heads=4", "model.n_kv_heads=4", "model.ffn_dim=128", "model.max_seq_len=64",
             "model.mla.q_lora_rank=32", "model.mla.kv_lora_rank=16", "model.mla.qk_nope_head_dim=8",
             "model.mla.qk_rope_head_dim=8", "model.mla.v_head_dim=16", "model.moe.expert_ffn_dim=32",
             "model.moe.bias_update_speed=0.01"]


def run_config(root, steps: int, **extra: str) -> RunConfig:
    overrides = [*SMALL_MOE, f"train.steps={steps}", "data.max_bytes=60000", "data.seq_len=32",
                 "train.batch_size=4", "train.micro_batch_size=2", "train.eval_every=0", "train.log_every=2",
                 "train.progress=false", "device.threads=1", "checkpoint.background=false",
                 "optim.warmup_steps=2", f'train.run_dir="{root / "run"}"', f'data.cache_dir="{root / "cache"}"',
                 *(f"{k}={v}" for k, v in extra.items())]
    return config.load(RunConfig, None, overrides)


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
