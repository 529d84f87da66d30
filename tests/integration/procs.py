"""Starting tenacia processes from tests: own session, parent-death signal, killed in teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tenacia.process import die_with_parent

# A run small enough for many processes on 2 cores: the micro model on 300 kB of stdlib source.
SMALL = [
    "model.preset=micro", "data.seq_len=64", "data.max_bytes=300000", "train.batch_size=8",
    "train.micro_batch_size=4", "train.eval_batches=8", "train.eval_every=0", "train.progress=false",
    "device.threads=1",
]


class Procs:
    """Every process a test starts; ``kill_all`` ends them whatever state they are in."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL
        p = subprocess.Popen([sys.executable, "-m", "tenacia", *args], stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, **(env or {})}, start_new_session=True,
                             preexec_fn=die_with_parent)
        self.procs.append(p)
        return p

    def run(self, args: list[str], timeout: float, env: dict | None = None, log: Path | None = None) -> int:
        p = self.start(args, env, log)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(p)
            raise AssertionError(f"tenacia {' '.join(args)} did not finish within {timeout}s; log: {log}") from None

    @staticmethod
    def kill(p: subprocess.Popen) -> None:
        for sig in (signal.SIGCONT, signal.SIGKILL):  # a stopped process ignores SIGTERM
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        p.wait(timeout=10)

    def kill_all(self) -> None:
        for p in self.procs:
            self.kill(p)


def train_args(run_dir: Path, *overrides: str) -> list[str]:
    args = ["train", "--run-dir", str(run_dir)]
    for o in (*SMALL, *overrides):
        args += ["-o", o]
    return args


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*"))
    return load_file(str(ckpts[-1] / "model.safetensors"))


def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
