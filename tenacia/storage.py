"""Everything tenacia writes to disk goes through here: crash-safe files and directories, the
cache root, and JSON Lines logs.

Contract:
- ``atomic_write(path, data)``: ``path`` holds either its old content or the whole new content,
  never a mix. The bytes go to a temporary sibling ``.tmp-<name>-<pid>-<thread>``, which is
  fsynced and renamed over ``path`` (atomic on POSIX); the directory is fsynced so the rename
  itself survives a power loss. A crash leaves at most a stray temporary file, never read.
- ``atomic_directory(final)``: the same for a whole directory. The caller fills the temporary
  sibling ``.tmp-<name>-<pid>`` it is given; on a clean exit every file in it is fsynced, it is
  renamed to ``final`` and the parent fsynced; on an exception it is removed. ``final`` appears
  whole or not at all. With ``replace=False`` a ``final`` published meanwhile by another process
  wins and ours is discarded (``DirectoryPublish.published`` says which happened).
- ``append_jsonl(path, record)``: one ``os.write`` of one line on a file opened with ``O_APPEND``:
  lines from several processes do not interleave, and a crash leaves at most one truncated last
  line, which ``read_jsonl`` and ``JsonlTail`` skip.
- ``read_json(path)``: a small JSON object written with ``atomic_write``, or None when it is
  missing or unreadable (a reader racing a writer sees the old or the new file, never half).
- ``cache_root()``: where derived artefacts (tokenizers, token files, converted models, compiled
  kernels) are kept between runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "TENACIA_CACHE"
TMP_PREFIX = ".tmp-"


def cache_root(configured: str | Path = "") -> Path:
    """``configured`` if set, else ``$TENACIA_CACHE``, else ``~/.cache/tenacia``."""
    chosen = str(configured) or os.environ.get(CACHE_ENV, "") or "~/.cache/tenacia"
    return Path(chosen).expanduser()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Flush every file under ``directory`` and every directory itself, children first."""
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(directory)


def atomic_write(path: str | Path, data: bytes | str | Callable[[Path], None]) -> None:
    """Create or replace ``path`` with ``data``, all or nothing (see module contract).

    ``data`` is the content, or a function that writes the content to the path it is given (for
    writers that take a file name, such as safetensors' ``save_file``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{threading.get_native_id()}")
    try:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # some writers (safetensors) create 0600 files; ours are shared
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    atomic_write(path, json.dumps(obj, indent=indent, default=str) + ("\n" if indent else ""))


def read_json(path: str | Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


@dataclass(slots=True)
class DirectoryPublish:
    """What ``atomic_directory`` did: ``published`` is False when another process's ``final``
    won (``replace=False``) and ours was discarded."""

    tmp: Path
    published: bool = False


@contextlib.contextmanager
def atomic_directory(final: str | Path, *, replace: bool = True) -> Iterator[DirectoryPublish]:
    """Build a directory in a temporary sibling and publish it as ``final`` (module contract)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    result = DirectoryPublish(tmp)
    try:
        yield result
        fsync_tree(tmp)
        if final.exists():
            if not replace:
                return
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if replace or not final.exists():
                raise
            return  # another process published it between our check and our rename
        result.published = True
        fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(directory: Path) -> None:
    """Remove temporary files and directories that other (dead or finished) processes left in
    ``directory``; this process's own are kept."""
    pid = os.getpid()
    for p in directory.glob(f"{TMP_PREFIX}*"):
        if p.name.endswith(f"-{pid}") or f"-{pid}-" in p.name:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as one line, in one write (see module contract)."""
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _records(lines: list[bytes] | list[str]) -> tuple[list[dict[str, Any]], int]:
    records, skipped = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Whole JSON objects of a JSON Lines file in order, and how many lines were skipped as
    unreadable (a truncated last line, garbage). A missing file has no records."""
    p = Path(path)
    if not p.exists():
        return [], 0
    return _records(p.read_text(errors="replace").splitlines())


class JsonlTail:
    """Follows a growing JSON Lines file: each ``new()`` returns the whole records appended since
    the last call (a partly written last line waits for the next call)."""

    def __init__(self, path: str | Path, from_end: bool = False):
        self.path = Path(path)
        self.offset = self.path.stat().st_size if from_end and self.path.exists() else 0

    def new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return _records(data[:end].splitlines())[0]
