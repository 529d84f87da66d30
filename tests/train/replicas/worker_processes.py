"""Run a worker script as ``world`` real processes on one TCPStore and load what each saved.

The worker is called as ``worker rank world host:port out`` and writes ``out/{rank}.pt`` (every
rank) and ``out/{rank}-lost.pt`` (every rank but the last, which leaves early in the workers
here). Every process is waited for at most ``limit_s`` and killed on the way out, whatever
happened; a non-zero exit fails with every worker's output."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def run_workers(worker: Path, world: int, out: Path, limit_s: float) -> tuple[list[Any], list[Any]]:
    """(each rank's saved result, each surviving rank's result after the last one left)."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=limit_s))
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), str(world), f"127.0.0.1:{store.port}", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(world)]
    try:
        logs = [p.communicate(timeout=limit_s)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), logs
    return ([torch.load(out / f"{r}.pt") for r in range(world)],
            [torch.load(out / f"{r}-lost.pt") for r in range(world - 1)])
