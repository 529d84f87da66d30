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

    def __init__(self, preset: str, seq_len: int, batch: int, replicas: int, slot: int, lr: float = 1e-3):
        torch.set_num_threads(1)
        self.cfg = ModelConfig(preset=preset)
        self.seq_len, self.batch, self.replicas, self.slot = seq_len, batch, replicas, slot
        self.tokens = token_stream()
        self.model = Llama(self.cfg)
        self.model.reset_parameters(seed=0)  # identical start everywhere
        self.lr = lr

    def optimizer(self, params) -> torch.optim.AdamW:
        return torch.optim.AdamW(params, lr=self.lr, betas=(0.9, 0.95), weight_decay=0.1)

    def batch_for(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch, seq_len), for this slot at ``step``."""
        n = self.tokens.numel() - self.seq_len - 1
        first = step * self.replicas * self.batch + self.slot * self.batch
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
        reaches them in a bench run: steps x replicas x batch stays far below 90% of the windows)."""
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
