"""Configuration of fault injection (``[chaos]``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check
from . import killpoints
from .schedule import parse_fault


@dataclass(kw_only=True, slots=True)
class ChaosConfig:
    """Faults to inject into this run, deterministically by step or by seed."""

    kill_at: str = ""  # one named in-process kill point '<point>@<step>' (tenacia.chaos.killpoints)
    faults: list[str] = field(default_factory=list)  # schedule entries (tenacia.chaos.schedule)
    kill_rate: float = 0.0  # random kills per second across the job (Poisson), replica drawn by seed
    kill_rate_duration_s: float = 3600.0  # window over which random kills are drawn, from the first committed step
    seed: int = 0

    def __post_init__(self) -> None:
        killpoints.parse(self.kill_at)
        for i, text in enumerate(self.faults):
            parse_fault(text, f"chaos.faults[{i}]")
        check(self.kill_rate >= 0, "chaos.kill_rate", self.kill_rate, "a number of kills per second >= 0")
        check(self.kill_rate_duration_s > 0, "chaos.kill_rate_duration_s", self.kill_rate_duration_s,
              "a positive number of seconds")
