"""Configuration of the optimizer and of the training loop."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check, check_choice
from ..device import DEVICE_CHOICES


@dataclass(kw_only=True, slots=True)
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 3e-3
    weight_decay: float = 0.1  # applied to matrices only, not to norms
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", self.lr, "a positive number")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a number >= 0")
        check(0 <= self.beta1 < 1, "optim.beta1", self.beta1, "a number in [0, 1)")
        check(0 <= self.beta2 < 1, "optim.beta2", self.beta2, "a number in [0, 1)")
        check(self.eps > 0, "optim.eps", self.eps, "a positive number")
        check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, "an integer >= 0")
        check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "a number in [0, 1]")
        check(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, "a number >= 0 (0 disables)")


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """The loop: how many steps, how big, how often to evaluate and log."""

    run_dir: str = "runs/default"  # checkpoints, metrics.jsonl, events.jsonl, tokenizer.json
    steps: int = 300
    batch_size: int = 16  # samples per optimizer step (the global batch, across all replicas)
    micro_batch_size: int = 16  # samples per forward/backward; batch_size must be a multiple
    eval_every: int = 50  # steps between held-out evaluations (0: only at the end)
    eval_batches: int = 4
    log_every: int = 10
    seed: int = 0  # model init and any randomness in the step
    device: str = "auto"
    threads: int = 0  # torch intra-op threads (0: leave torch's default). Pin for bit-identity.
    progress: bool = True  # live progress bar on a terminal

    def __post_init__(self) -> None:
        check(self.steps > 0, "train.steps", self.steps, "a positive integer")
        check(self.batch_size > 0, "train.batch_size", self.batch_size, "a positive integer")
        check(self.micro_batch_size > 0, "train.micro_batch_size", self.micro_batch_size, "a positive integer")
        check(self.batch_size % self.micro_batch_size == 0, "train.batch_size", self.batch_size,
              f"a multiple of train.micro_batch_size={self.micro_batch_size}")
        check(self.eval_every >= 0, "train.eval_every", self.eval_every, "an integer >= 0")
        check(self.eval_batches > 0, "train.eval_batches", self.eval_batches, "a positive integer")
        check(self.log_every > 0, "train.log_every", self.log_every, "a positive integer")
        check(self.threads >= 0, "train.threads", self.threads, "0 (torch default) or a positive integer")
        check_choice("train.device", self.device, DEVICE_CHOICES)


@dataclass(kw_only=True, slots=True)
class CheckpointConfig:
    """Crash-safe checkpoints under ``<run_dir>/checkpoints``."""

    every: int = 100  # steps between checkpoints (0: only the final one)
    keep: int = 3  # newest K verified checkpoints kept on disk
    background: bool = True  # write files in a background thread after an in-memory copy
    resume: bool = True  # start from the newest checkpoint that verifies, if any

    def __post_init__(self) -> None:
        check(self.every >= 0, "checkpoint.every", self.every, "an integer >= 0")
        check(self.keep >= 1, "checkpoint.keep", self.keep, "a positive integer")
