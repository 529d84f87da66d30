"""The fault vocabulary: what a run may ask to suffer (the ``[chaos]`` section), as plain data.

Training reads this section but never injects anything itself: ``tenacia.chaos`` does, through
the points of ``tenacia.hooks`` (in-process kill points) and the launcher's supervision plug-ins
(signals to replica processes). This module is what both sides agree on.

A kill point is armed by ``"<point>@<step>"``: ``mid_step@17``, ``checkpoint:model.safetensors@20``
(the points are listed in ``tenacia.hooks``). A schedule entry is a string:

| entry                     | fault                                                            |
|---------------------------|------------------------------------------------------------------|
| ``kill:R@S``              | SIGKILL replica R once step S is committed                        |
| ``hang:R@S:T``            | SIGSTOP replica R at step S, SIGCONT it T seconds later           |
| ``slow:R@S:F``            | from step S on, replica R runs F times slower (SIGSTOP duty cycle)|
| ``kill_coordinator@S``    | SIGKILL whichever replica leads at step S                         |
| ``kill_healing@S``        | after step S, SIGKILL the next replica that starts healing        |
| ``kill_checkpoint@S``     | the leader dies right after writing model.safetensors of step S's checkpoint |

plus ``kill_rate`` (kills per second, Poisson, replica chosen by the seeded RNG).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import ConfigError, check

KILL_POINTS = ("mid_step", "between_steps", "phase:compute", "phase:allreduce", "phase:vote", "phase:idle",
               "phase:apply", "checkpoint:<file>", "checkpoint:renamed")
KINDS = ("kill", "hang", "slow", "kill_coordinator", "kill_healing", "kill_checkpoint")
_ENTRY = re.compile(r"^(?P<kind>[a-z_]+)(?::(?P<replica>\d+))?@(?P<step>\d+)(?::(?P<param>[0-9.]+))?$")
_ALLOWED = ("kill:R@S, hang:R@S:SECONDS, slow:R@S:FACTOR, kill_coordinator@S, kill_healing@S, "
            "kill_checkpoint@S")


def parse_kill_point(spec: str, field_name: str = "kill_at") -> tuple[str, int] | None:
    """``'mid_step@17'`` -> ('mid_step', 17); '' -> None."""
    if not spec:
        return None
    name, sep, step = spec.rpartition("@")
    check(bool(sep) and bool(name) and step.isdigit(), field_name, spec,
          f"'<point>@<step>' with point one of {', '.join(KILL_POINTS)}")
    return name, int(step)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    step: int
    replica: int | None = None
    param: float | None = None  # seconds for hang, factor for slow

    @property
    def spec(self) -> str:
        who = f":{self.replica}" if self.replica is not None else ""
        extra = f":{self.param:g}" if self.param is not None else ""
        return f"{self.kind}{who}@{self.step}{extra}"


def parse_fault(text: str, field_name: str = "faults") -> Fault:
    m = _ENTRY.match(text.strip())
    if not m or m["kind"] not in KINDS:
        raise ConfigError(field_name, text, f"one of {_ALLOWED}")
    kind, replica = m["kind"], m["replica"]
    needs_replica = kind in ("kill", "hang", "slow")
    if needs_replica != (replica is not None):
        raise ConfigError(field_name, text, f"{kind} {'needs' if needs_replica else 'takes no'} replica number; {_ALLOWED}")
    needs_param = kind in ("hang", "slow")
    if needs_param != (m["param"] is not None):
        raise ConfigError(field_name, text, f"{kind} {'needs' if needs_param else 'takes no'} ':value'; {_ALLOWED}")
    param = float(m["param"]) if m["param"] else None
    if kind == "slow" and param is not None and param < 1:
        raise ConfigError(field_name, text, "a slow-down factor >= 1")
    return Fault(kind, int(m["step"]), int(replica) if replica is not None else None, param)


@dataclass(kw_only=True, slots=True)
class ChaosConfig:
    """Faults to inject into this run, deterministically by step or by seed."""

    kill_at: str = ""  # one in-process kill point '<point>@<step>' (module docstring)
    faults: list[str] = field(default_factory=list)  # schedule entries (module docstring)
    kill_rate: float = 0.0  # random kills per second across the job (Poisson), replica drawn by seed
    kill_rate_duration_s: float = 3600.0  # window over which random kills are drawn, from the first committed step
    seed: int = 0

    def __post_init__(self) -> None:
        parse_kill_point(self.kill_at)
        for i, text in enumerate(self.faults):
            parse_fault(text, f"faults[{i}]")
        check(self.kill_rate >= 0, "kill_rate", self.kill_rate, "a number of kills per second >= 0")
        check(self.kill_rate_duration_s > 0, "kill_rate_duration_s", self.kill_rate_duration_s,
              "a positive number of seconds")

    @property
    def any(self) -> bool:
        """Whether this run asks for any fault at all."""
        return bool(self.kill_at or self.faults or self.kill_rate)
