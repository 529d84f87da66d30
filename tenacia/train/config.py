"""Configuration of the optimizer and of the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(kw_only=True, slots=True)
class ReplicaConfig:
    """Fault-tolerant data-parallel replicas (``tenacia train --replicas N``).

    Failure detection needs no hand-set timeout: a crash is seen when its connections close, a
    hang after ``max(hang_floor_s, hang_factor x median step time)`` measured over recent steps.
    """

    count: int = 1  # replicas the launcher starts on this host (1 without --replicas: one plain process)
    first_id: int = 0  # replica ids on this host are first_id .. first_id + count - 1 (unique per job)
    min_replicas: int = 1  # never form a quorum smaller than this (training waits instead)
    max_replicas: int = 64  # newcomers beyond this wait outside the quorum
    host: str = "127.0.0.1"  # address replicas listen on and advertise to peers
    join: list[str] = field(default_factory=list)  # HOST:PORT of any live replica, to join a running job
    restart_budget: int = 20  # process restarts the launcher allows in a run, all replicas together
    spares: int = 1  # warm replica processes kept ready (imported, built, loaded) to replace a dead one
    restart_backoff_s: float = 0.2  # first restart delay; doubles per consecutive crash of a replica, max 5 s
    # Heartbeats come every 0.1 s from a thread of their own; measured on 4 replicas on 2 cores,
    # with crashes, hangs and heals, no gap at the leader was longer than 0.23 s.
    hang_floor_s: float = 0.5  # hang detection never fires sooner than this
    hang_factor: float = 1.5  # ... nor sooner than this many median step times
    join_grace_s: float = 20.0  # at start, how long the first leader waits for all `count` replicas
    threads: int = 1  # torch threads per replica process (several replicas share the cores)

    def __post_init__(self) -> None:
        check(self.count >= 1, "replicas.count", self.count, "a positive integer")
        check(self.first_id >= 0, "replicas.first_id", self.first_id, "an integer >= 0")
        check(1 <= self.min_replicas <= max(self.count, 1), "replicas.min_replicas", self.min_replicas,
              f"an integer in 1..replicas.count={self.count}")
        check(self.max_replicas >= self.count, "replicas.max_replicas", self.max_replicas,
              f"at least replicas.count={self.count}")
        check(self.restart_budget >= 0, "replicas.restart_budget", self.restart_budget, "an integer >= 0")
        check(self.spares in (0, 1), "replicas.spares", self.spares, "0 or 1")
        check(self.restart_backoff_s >= 0, "replicas.restart_backoff_s", self.restart_backoff_s, "a number >= 0")
        check(self.hang_floor_s > 0, "replicas.hang_floor_s", self.hang_floor_s, "a positive number of seconds")
        check(self.hang_factor >= 1, "replicas.hang_factor", self.hang_factor, "a number >= 1")
        check(self.threads >= 1, "replicas.threads", self.threads, "a positive integer")
        for addr in self.join:
            check(":" in addr and addr.rpartition(":")[2].isdigit(), "replicas.join", addr, "HOST:PORT addresses")
