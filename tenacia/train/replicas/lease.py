"""Leader terms, claimed in the run directory: at most one leader per term, and a fence.

Every replica of a job shares the run directory (it holds the checkpoints and the sample ledger,
so it must be on storage all hosts see). A replica becomes leader only by claiming a new term:
creating ``<run_dir>/terms/<term>.json`` with ``O_CREAT | O_EXCL``, which exactly one process can do
for a given number. The newest term file names the current leader and its control address, so a
replica that (re)joins asks it first.

The fence: before it commits a step, a leader checks that no newer term exists. A leader that was
frozen, partitioned away or merely slow while the others elected a successor therefore stops at
its next commit instead of training a second copy of the run (split brain), and tells its members
to rejoin. This holds as long as the run directory's ``O_EXCL`` create is atomic (local
filesystems, NFSv3+).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def terms_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "terms"


def newest_term(run_dir: Path) -> int:
    """The highest claimed term (0 when none)."""
    d = terms_dir(run_dir)
    if not d.is_dir():
        return 0
    numbers = [int(p.stem) for p in d.glob("*.json") if p.stem.isdigit()]
    return max(numbers, default=0)


def claim_term(run_dir: Path, replica: int, control: str, at_least: int = 1) -> int:
    """Claim the next free term >= ``at_least`` (and above every claimed one); returns it."""
    d = terms_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    term = max(at_least, newest_term(run_dir) + 1)
    while True:
        try:
            fd = os.open(d / f"{term:08d}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            term += 1
            continue
        try:
            os.write(fd, json.dumps({"term": term, "replica": replica, "control": control,
                                     "pid": os.getpid()}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return term


def leader_of(run_dir: Path) -> dict[str, Any] | None:
    """The newest term's record (replica, control address, pid), if it can be read."""
    term = newest_term(run_dir)
    if not term:
        return None
    try:
        return json.loads((terms_dir(run_dir) / f"{term:08d}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
