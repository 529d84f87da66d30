"""What every peer arm of bench/faults.py trains: the same Llama (tenacia.model.llama, a preset),
the same byte-level token stream (this Python's own standard library sources), the same sample
order and the same AdamW, so that only the fault-tolerance machinery differs between arms.

Sample i of the stream is the window ``tokens[(i * STRIDE) % n : ... + seq_len + 1]``. At step s
(counted from 0), replica slot r of R takes samples ``s * R * batch + r * batch ...``: a replica
that is missing leaves its share untrained (the global batch shrinks), which is what DDP-style
peers do.

Every worker appends its records to ``$BENCH_LOG`` (one JSON object a line, one ``write`` each):
``worker_started``, ``worker_step`` (step, committed, participants, tokens, loss),
``worker_resumed``, ``worker_sigterm``, ``worker_error``; ``bench/peers/analyze.py`` turns them
into a tenacia event log.
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
