"""Tenacia's workload written out for the peers of bench/slow_links.py (``$BENCH_WORKLOAD``).

The peers (torchft's workers, the torchrun DDP) cannot run tenacia's data pipeline in their own
venv; this writes, from tenacia's own code, what they need to train exactly what a tenacia arm
trains (``bench/peers/common.py``, ``Workload``):

- ``train``: the samples at stream positions ``0 .. samples - 1`` in the sampler's order
  (``Sampler(len(train), data.seed)``), int16 rows of ``seq_len + 1`` token ids;
- ``eval`` and ``eval_batch``: the held-out windows ``Trainer.evaluate`` takes (the first
  ``eval_batches x micro_batch_size``) and the batches it takes them in;
- ``seed``: the model's (``train.seed``: ``torch.manual_seed`` then ``reset_parameters``);
- ``optim``: AdamW's settings, the schedule (``lr_at``: warmup, cosine over ``schedule_steps``,
  then the floor) and the gradient clipping, as tenacia's ddp steps use them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tenacia import config
from tenacia.data.dataset import prepare_data
from tenacia.data.sampler import Sampler
from tenacia.train.config import RunConfig


def write_workload(overrides: list[str], samples: int, path: Path) -> dict[str, float]:
    """Write the workload of a tenacia run with ``overrides`` (its first ``samples`` positions) to
    ``path``; returns its ``optim`` part."""
    cfg = config.load(RunConfig, overrides=overrides)
    data = prepare_data(cfg.data, cfg.model.vocab_size)
    if cfg.model.vocab_size > 2 ** 15:
        raise ValueError(f"model.vocab_size {cfg.model.vocab_size} does not fit the file's int16 token ids")
    ids = Sampler(len(data.train), cfg.data.seed).ids_at(0, samples)
    n_eval = min(len(data.eval), cfg.train.eval_batches * cfg.train.micro_batch_size)
    o = cfg.optim
    optim = {"lr": o.lr, "weight_decay": o.weight_decay, "betas": [o.beta1, o.beta2], "eps": o.eps,
             "warmup_steps": o.warmup_steps, "min_lr_ratio": o.min_lr_ratio,
             "schedule_steps": o.schedule_steps(cfg.train.steps), "grad_clip": o.grad_clip}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"train": data.train.get(ids).to(torch.int16), "eval": data.eval.get(range(n_eval)).to(torch.int16),
                "eval_batch": cfg.train.micro_batch_size, "seed": cfg.train.seed, "optim": optim}, path)
    return optim
