"""The on-disk cache of trained tokenizers and token files, and its crash-safe writes.

Contract: a cache entry is either absent or complete. Every file is written under a temporary
name in the same directory, fsynced, then renamed over its final name (atomic on POSIX), and the
directory is fsynced so the rename itself survives a power loss. A crash leaves at most a stray
``*.tmp-<pid>`` file, which is never read. Two processes filling the same entry at once are safe:
each writes its own temporary file, and cached content is deterministic, so whichever rename
lands last leaves the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

ENV_VAR = "TENACIA_CACHE"


def cache_root(configured: str = "") -> Path:
    """``configured`` if set, else ``$TENACIA_CACHE``, else ``~/.cache/tenacia``."""
    chosen = configured or os.environ.get(ENV_VAR, "") or "~/.cache/tenacia"
    return Path(chosen).expanduser()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create ``path`` with the bytes ``write(f)`` puts into ``f``, all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
