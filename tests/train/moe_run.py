"""A deepseek-v3 run small enough for tests: moe-tiny shrunk to seconds."""

from __future__ import annotations

from tenacia import config
from tenacia.train.config import RunConfig

# 2 layers (1 dense, 1 MoE of 8 experts) plus the MTP module; a 60 kB corpus, 32-token windows.
SMALL_MOE = ["model.preset=moe-tiny", "model.vocab_size=512", "model.dim=64", "model.n_layers=2",
             "model.n_heads=4", "model.n_kv_heads=4", "model.ffn_dim=128", "model.max_seq_len=64",
             "model.mla.q_lora_rank=32", "model.mla.kv_lora_rank=16", "model.mla.qk_nope_head_dim=8",
             "model.mla.qk_rope_head_dim=8", "model.mla.v_head_dim=16", "model.moe.expert_ffn_dim=32",
             "model.moe.bias_update_speed=0.01"]


def run_config(root, steps: int) -> RunConfig:
    """Run directory ``root/run``, data cache ``root/cache``, ``steps`` steps of 4 samples."""
    overrides = [*SMALL_MOE, f"train.steps={steps}", "data.max_bytes=60000", "data.seq_len=32",
                 "train.batch_size=4", "train.micro_batch_size=2", "train.eval_every=0", "train.log_every=2",
                 "train.progress=false", "device.threads=1", "checkpoint.background=false",
                 "optim.warmup_steps=2", f'train.run_dir="{root / "run"}"', f'data.cache_dir="{root / "cache"}"']
    return config.load(RunConfig, None, overrides)
