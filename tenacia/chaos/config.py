"""Configuration of fault injection."""

from __future__ import annotations

from dataclasses import dataclass

from . import killpoints


@dataclass(kw_only=True, slots=True)
class ChaosConfig:
    """Faults to inject into this run, deterministically."""

    kill_at: str = ""  # one named kill point '<point>@<step>' (see tenacia.chaos.killpoints)

    def __post_init__(self) -> None:
        killpoints.parse(self.kill_at)
