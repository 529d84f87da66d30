"""Where each replica of a job can be reached: ``<run_dir>/replicas/r<id>.json``.

A replica publishes ``{"replica", "pid", "control", "heal"}`` when it starts (written atomically
by ``tenacia.storage``, so a reader sees the old record or the new one, never half of one). The
launcher reads them to find its children and live peers to join, a replica to find peers to ask
for the leader, and ``tenacia chaos`` to find the pid it sends a fault to. A record outlives its
process: readers that need a live replica check the pid.

A seed address ``@N`` stands for "replica N's control address, once it publishes one": the
launcher starts a job's joiners together with its first replica (each spends seconds importing
and building its trainer) and they ``resolve`` the seed just before they join.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ...storage import atomic_write_json, read_json


def address_file(run_dir: str | Path, replica: int) -> Path:
    return Path(run_dir) / "replicas" / f"r{replica}.json"


def publish(run_dir: str | Path, replica: int, control: str, heal: str) -> None:
    """Record this process as replica ``replica`` of the job in ``run_dir``."""
    atomic_write_json(address_file(run_dir, replica),
                      {"replica": replica, "pid": os.getpid(), "control": control, "heal": heal})


def forget(run_dir: str | Path, replica: int) -> None:
    address_file(run_dir, replica).unlink(missing_ok=True)


def read(run_dir: str | Path, replica: int) -> dict[str, Any] | None:
    """Replica ``replica``'s record, or None when there is none (or it cannot be read)."""
    info = read_json(address_file(run_dir, replica))
    return info if isinstance(info, dict) and {"replica", "pid", "control"} <= info.keys() else None


def read_all(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every readable record of the job, by replica id."""
    out = []
    for f in sorted((Path(run_dir) / "replicas").glob("r*.json")):
        if f.stem[1:].isdigit():
            info = read(run_dir, int(f.stem[1:]))
            if info is not None:
                out.append(info)
    return out


def resolve(run_dir: str | Path, seeds: list[str], timeout_s: float, poll_s: float = 0.05) -> list[str]:
    """``seeds`` with every ``@N`` replaced by replica N's published control address (waiting for
    it up to ``timeout_s``; the launcher removed the job's old records before starting it)."""
    out = []
    for seed in seeds:
        if not seed.startswith("@"):
            out.append(seed)
            continue
        replica, end = int(seed[1:]), time.monotonic() + timeout_s
        while (info := read(run_dir, replica)) is None:
            if time.monotonic() > end:
                raise TimeoutError(f"replica {replica} published no address in {run_dir} within {timeout_s:.0f}s")
            time.sleep(poll_s)
        out.append(info["control"])
    return out
