"""Fault schedules: which fault hits which replica when, deterministic by seed.

A schedule entry is a string:

| entry                     | fault                                                            |
|---------------------------|------------------------------------------------------------------|
| ``kill:R@S``              | SIGKILL replica R once step S is committed                        |
| ``hang:R@S:T``            | SIGSTOP replica R at step S, SIGCONT it T seconds later           |
| ``slow:R@S:F``            | from step S on, replica R runs F times slower (SIGSTOP duty cycle)|
| ``kill_coordinator@S``    | SIGKILL whichever replica leads at step S                         |
| ``kill_healing@S``        | after step S, SIGKILL the next replica that starts healing        |
| ``kill_checkpoint@S``     | the leader dies right after writing model.safetensors of step S's checkpoint |

plus ``kill_rate`` (kills per second, Poisson, replica chosen by the seeded RNG). The launcher
runs the schedule against its own children; ``tenacia chaos`` sends the same faults by hand.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..config import ConfigError

KINDS = ("kill", "hang", "slow", "kill_coordinator", "kill_healing", "kill_checkpoint")
_ENTRY = re.compile(r"^(?P<kind>[a-z_]+)(?::(?P<replica>\d+))?@(?P<step>\d+)(?::(?P<param>[0-9.]+))?$")


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


def parse_fault(text: str, field: str = "chaos.faults") -> Fault:
    allowed = ("kill:R@S, hang:R@S:SECONDS, slow:R@S:FACTOR, kill_coordinator@S, kill_healing@S, "
               "kill_checkpoint@S")
    m = _ENTRY.match(text.strip())
    if not m or m["kind"] not in KINDS:
        raise ConfigError(field, text, f"one of {allowed}")
    kind, replica = m["kind"], m["replica"]
    needs_replica = kind in ("kill", "hang", "slow")
    if needs_replica != (replica is not None):
        raise ConfigError(field, text, f"{kind} {'needs' if needs_replica else 'takes no'} replica number; {allowed}")
    needs_param = kind in ("hang", "slow")
    if needs_param != (m["param"] is not None):
        raise ConfigError(field, text, f"{kind} {'needs' if needs_param else 'takes no'} ':value'; {allowed}")
    param = float(m["param"]) if m["param"] else None
    if kind == "slow" and param is not None and param < 1:
        raise ConfigError(field, text, "a slow-down factor >= 1")
    return Fault(kind, int(m["step"]), int(replica) if replica is not None else None, param)


def random_kills(rate_per_s: float, duration_s: float, replicas: int, seed: int) -> list[tuple[float, int]]:
    """(time offset, replica) of Poisson kills: the same list for the same seed on every machine."""
    rng = random.Random(seed)
    out, t = [], 0.0
    while rate_per_s > 0:
        t += rng.expovariate(rate_per_s)
        if t >= duration_s:
            break
        out.append((t, rng.randrange(replicas)))
    return out
