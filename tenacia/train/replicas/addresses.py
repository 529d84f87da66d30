"""Where each replica of a job can be reached: ``<run_dir>/replicas/r<id>.json``.

A replica publishes ``{"replica", "pid", "control", "heal"}`` when it starts (written atomically
by ``tenacia.storage``, so a reader sees the old record or the new one, never half of one). The
launcher reads them to find its children and live peers to join, a replica to find peers to ask
for the leader, and ``tenacia chaos`` to find the pid it sends a fault to. A record outlives its
process: readers that need a live replica check the pid.
"""

from __future__ import annotations

import os
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
