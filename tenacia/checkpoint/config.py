"""``[checkpoint]``: how often a run writes crash-safe checkpoints and how many it keeps.

Torch-free, so that the launcher and every command line read the config tree without importing
torch (``writer.py`` writes the checkpoints this section asks for).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check


@dataclass(kw_only=True, slots=True)
class CheckpointConfig:
    """Crash-safe checkpoints under ``<run_dir>/checkpoints``."""

    every: int = 100  # steps between checkpoints (0: only the final one)
    keep: int = 3  # newest K verified checkpoints kept on disk
    background: bool = True  # write files in a background thread after an in-memory copy
    resume: bool = True  # start from the newest checkpoint that verifies, if any

    def __post_init__(self) -> None:
        check(self.every >= 0, "every", self.every, "an integer >= 0")
        check(self.keep >= 1, "keep", self.keep, "a positive integer")
