"""Append-only JSONL event log (`<run_dir>/events.jsonl`); schema in docs/events.md.

Every line is written by ``tenacia.storage.append_jsonl``: one ``write`` on a file opened in
append mode, so lines from several processes do not interleave and a crash leaves at most one
truncated last line, which ``read_events`` and ``EventTail`` skip.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from .storage import JsonlTail, append_jsonl, read_jsonl


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
            with self._lock:
                append_jsonl(self.path, record)
        return record


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All whole events of a log in file order; a truncated or garbled line is skipped."""
    return [r for r in read_jsonl(path)[0] if "event" in r]


class EventTail(JsonlTail):
    """Follows a growing event log: each ``new()`` returns the whole lines appended since the
    last call (a partly written last line waits for the next call)."""
