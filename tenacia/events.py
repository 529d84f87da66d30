"""Append-only JSONL event log (`<run_dir>/events.jsonl`); schema in docs/events.md.

Every line is written with one ``write`` on a file opened in append mode and flushed at once, so
lines from several processes do not interleave and a crash leaves at most one truncated last line,
which ``read_events`` skips.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


class EventLog:
    """Writer of one source's events. Safe to share between threads of one process."""

    def __init__(self, path: str | Path | None, source: str):
        self.path = Path(path) if path is not None else None
        self.source = source
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, step: int | None = None, **fields: Any) -> dict[str, Any]:
        record = {"t": time.time(), "event": event, "source": self.source, "step": step, **fields}
        if self.path is not None:
            line = (json.dumps(record, default=str) + "\n").encode()
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        return record


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All whole events of a log in file order; a truncated or garbled line is skipped."""
    events = []
    p = Path(path)
    if not p.exists():
        return events
    for line in p.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "event" in record:
            events.append(record)
    return events


class EventTail:
    """Follows a growing event log: each ``new()`` returns the whole lines appended since the
    last call (a partly written last line waits for the next call)."""

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
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out
