"""What every peer arm of bench/faults.py trains: the same Llama (tenacia.model.llama, a preset),
the same byte-level token stream (this Python's own standard library sources), the same sample
order and the same AdamW, so that only the fault-tolerance machinery differs between arms.

Sample i of the stream is the window ``tokens[(i * STRIDE) % n : ... + seq_len + 1]``. At step s
(counted from 0), replica slot r of R takes samples ``s * R * batch + r * batch ...``: a replica
that is missing leaves its share untrained (the global batch shrinks), which is what DDP-style
peers do.

Every worker appends its records to ``$BENCH_LOG`` (one JSON object a line, one ``write`` each):
``worker_started``, ``worker_step`` (step, committed, participants, tokens, loss),
``worker_resumed``, ``worker_sigterm``, ``worker_error``, ``worker_eval``; ``bench/peers/analyze.py``
turns them into a tenacia event log.

For bench/slow_links.py, ``$BENCH_WORKLOAD`` names a file (``bench/slow_links_workload.py``) that
makes the workload tenacia's own, so that the peers and tenacia train the same model, data and
seeds: tenacia's samples in its sampler's order (position ``p`` of the stream is row ``p``; the
slot rule above picks the rows), its held-out eval windows and eval batches, its model seed, its
AdamW (weight decay on matrices only), learning-rate schedule (warmup, cosine over the schedule's
steps, then its floor) and gradient clipping (``Workload.prepare_step`` before each optimizer step).

For bench/numeric_faults.py: ``$BENCH_STEPS`` ends a worker after that many steps (then it logs
``worker_eval``: the loss on held-out windows), and ``$BENCH_CORRUPT`` (a JSON list of
``{"replica", "step", "bits", "every"}``) makes ``WrongNumbers`` flip bits of this worker's local
gradient, through ``tenacia.chaos.sdc.flip``, before DDP averages it (a tensor hook on a weight:
it runs before the gradient is accumulated and reduced).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import torch

from tenacia.model.llama import Llama, loss_fn
from tenacia.shape import ModelConfig

STRIDE = 97
STREAM_BYTES = 4_000_000


def token_stream() -> torch.Tensor:
    """Bytes of the standard library's .py files in sorted order, as int64 token ids (< 256)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, size = [], 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= STREAM_BYTES:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)[:STREAM_BYTES]), dtype=torch.uint8).long()


class Workload:
    """Model, optimizer and batches of one replica slot."""

    def __init__(self, preset: str, seq_len: int, batch: int, replicas: int, slot: int, lr: float | None = None,
                 min_lr_ratio: float | None = None):
        """``lr``: AdamW's rate (None: 1e-3; under ``$BENCH_WORKLOAD`` the file's peak rate);
        ``min_lr_ratio``: under ``$BENCH_WORKLOAD``, the schedule's floor (None: the file's)."""
        torch.set_num_threads(1)
        self.cfg = ModelConfig(preset=preset)
        self.seq_len, self.batch, self.replicas, self.slot = seq_len, batch, replicas, slot
        path = os.environ.get("BENCH_WORKLOAD")
        self.aligned = torch.load(path, weights_only=True) if path else None
        seed = 0
        if self.aligned is None:
            self.tokens = token_stream()
            self.lr = lr or 1e-3
        else:
            seed, self.optim = self.aligned["seed"], dict(self.aligned["optim"])
            self.lr = lr or self.optim["lr"]
            if min_lr_ratio is not None:
                self.optim["min_lr_ratio"] = min_lr_ratio
        torch.manual_seed(seed)
        self.model = Llama(self.cfg)
        self.model.reset_parameters(seed=seed)  # identical start everywhere

    def optimizer(self, params) -> torch.optim.AdamW:
        if self.aligned is None:
            return torch.optim.AdamW(params, lr=self.lr, betas=(0.9, 0.95), weight_decay=0.1)
        from tenacia.device import detect
        from tenacia.train.step import build_optimizer

        o = self.optim
        return build_optimizer(self.model, lr=self.lr, weight_decay=o["weight_decay"], betas=tuple(o["betas"]),
                               eps=o["eps"], device=detect("cpu"))

    def prepare_step(self, optim: torch.optim.Optimizer, step: int) -> None:
        """Before the optimizer step ``step`` (from 0): tenacia's learning rate for it and its
        gradient clipping (``$BENCH_WORKLOAD``; nothing otherwise: a constant rate, no clipping)."""
        if self.aligned is None:
            return
        from tenacia.train.step import lr_at

        o = self.optim
        rate = lr_at(step + 1, lr=self.lr, warmup_steps=o["warmup_steps"], total_steps=o["schedule_steps"],
                     min_lr_ratio=o["min_lr_ratio"])
        for group in optim.param_groups:
            group["lr"] = rate
        if o["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o["grad_clip"])

    def batch_for(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch, seq_len), for this slot at ``step``."""
        first = step * self.replicas * self.batch + self.slot * self.batch
        if self.aligned is not None:
            block = self.aligned["train"][first:first + self.batch].long()
            if block.size(0) < self.batch:
                raise ValueError(f"$BENCH_WORKLOAD holds {self.aligned['train'].size(0)} samples; step {step} needs more")
            return block[:, :-1], block[:, 1:]
        n = self.tokens.numel() - self.seq_len - 1
        rows = [self.tokens[((first + i) * STRIDE) % n:][: self.seq_len + 1] for i in range(self.batch)]
        block = torch.stack(rows)  # (batch, seq_len + 1)
        return block[:, :-1], block[:, 1:]

    def loss(self, module: torch.nn.Module, step: int) -> torch.Tensor:
        x, y = self.batch_for(step)
        return loss_fn(module(x), y)

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len

    @torch.no_grad()
    def eval_loss(self, module: torch.nn.Module, windows: int = 32) -> float:
        """Mean loss on ``windows`` fixed windows from the stream's last tenth (no training step
        reaches them in a bench run: steps x replicas x batch stays far below 90% of the windows);
        under ``$BENCH_WORKLOAD``, tenacia's eval: its held-out windows in its eval batches."""
        if self.aligned is not None:
            windows, size = self.aligned["eval"].long(), self.aligned["eval_batch"]
            total = sum(float(loss_fn(module(b[:, :-1]), b[:, 1:])) * b.size(0) for b in windows.split(size))
            return total / windows.size(0)
        n = self.tokens.numel() - self.seq_len - 1
        starts = [int(n * 0.9) + i * (self.seq_len + 1) for i in range(windows)]
        block = torch.stack([self.tokens[s:s + self.seq_len + 1] for s in starts])
        return float(loss_fn(module(block[:, :-1]), block[:, 1:]))


def finite_state(model: torch.nn.Module, optim: torch.optim.Optimizer) -> bool:
    """Whether every weight and every optimizer tensor is finite (an overflowed AdamW moment is
    not: it freezes its weight for the rest of the run)."""
    tensors = [*model.parameters(), *(v for s in optim.state.values() for v in s.values() if torch.is_tensor(v))]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def step_limit() -> int | None:
    return int(os.environ["BENCH_STEPS"]) if os.environ.get("BENCH_STEPS") else None


class WrongNumbers:
    """This worker's share of ``$BENCH_CORRUPT``: flips in its local gradient (module docstring)."""

    def __init__(self, model: torch.nn.Module, replica: int, log: Log):
        import random

        from tenacia.chaos import sdc

        self.step = 0
        plan = [c for c in json.loads(os.environ.get("BENCH_CORRUPT", "[]")) if c["replica"] == replica]
        weight = next(p for p in model.parameters() if p.dim() == 2)

        def hook(grad: torch.Tensor) -> torch.Tensor:
            for c in plan:
                if self.step == c["step"] or (c.get("every") and self.step >= c["step"]):
                    rng = random.Random(f"{c['step']}/{replica}/{self.step}")
                    grad = grad.clone()
                    rec = sdc.flip(grad, rng.randrange(grad.numel()), c["bits"], rng)
                    log.write("worker_corrupted", step=self.step, bits=c["bits"], old=str(rec.old), new=str(rec.new))
            return grad

        if plan:
            weight.register_hook(hook)


class Log:
    """Appends this worker's records to $BENCH_LOG."""

    def __init__(self, replica: int):
        self.path = os.environ["BENCH_LOG"]
        self.replica = replica

    def write(self, event: str, **fields: Any) -> None:
        record = {"t": time.time(), "event": event, "replica": self.replica, "pid": os.getpid(), **fields}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)


def log_sigterm(log: Log) -> None:
    """On SIGTERM (a launcher tearing the group down), log it and exit at once."""
    def handler(signum: int, frame: object) -> None:
        log.write("worker_sigterm")
        os._exit(143)

    signal.signal(signal.SIGTERM, handler)


def deadline_passed() -> bool:
    return time.time() >= float(os.environ.get("BENCH_DEADLINE", "inf"))


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (no orphans if the bench is killed); SIGUSR1
    prints every thread's stack (to look at a stuck worker)."""
    import ctypes
    import faulthandler

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def main_guard(log: Log, fn) -> None:
    try:
        fn()
    except Exception as e:  # the log says why a worker left; the launcher sees the exit code
        log.write("worker_error", error=f"{type(e).__name__}: {e}"[:500])
        sys.exit(1)
