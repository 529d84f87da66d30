"""Progress display: a live bar (step, loss, tokens/s, ETA) on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, total: int, start: int = 0, enabled: bool = True, label: str = "train", every: int = 1):
        self.total, self.start, self.label, self.every = total, start, label, every
        self.live = enabled and sys.stdout.isatty()
        self.plain = enabled and not self.live
        self._bar: RichProgress | None = None
        self._t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        if self.live:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.start, loss="-", tps="-")
        return self

    def update(self, step: int, loss: float | None = None, tokens_per_s: float | None = None) -> None:
        if self._bar is not None:
            fields = {}
            if loss is not None:
                fields = {"loss": f"{loss:.3f}", "tps": f"{tokens_per_s:,.0f}"}
            self._bar.update(self._task, completed=step, **fields)
        elif self.plain and loss is not None and (step % self.every == 0 or step == self.total):
            done = step - self.start
            eta = (time.perf_counter() - self._t0) / max(done, 1) * (self.total - step)
            print(f"{self.label} step {step}/{self.total}  loss {loss:.3f}  {tokens_per_s:,.0f} tok/s  ETA {eta:.0f}s",
                  flush=True)

    def log(self, text: str) -> None:
        """A line above the bar (or a plain line without one)."""
        if self._bar is not None:
            self._bar.console.print(text)
        elif self.plain or self.live:
            print(text, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
