"""The fault vocabulary: what a run may ask to suffer (the ``[chaos]`` section), as plain data.

Training reads this section but never injects anything itself: ``tenacia.chaos`` does, through
the points of ``tenacia.hooks`` (in-process kill points), its tamper sites (wrong numbers) and
the launcher's supervision plug-ins (signals to replica processes). This module is what both
sides agree on.

A kill point is armed by ``"<point>@<step>"``: ``mid_step@17``, ``checkpoint:model.safetensors@20``
(the points are listed in ``tenacia.hooks``). A schedule entry is a string:

| entry                     | fault                                                            |
|---------------------------|------------------------------------------------------------------|
| ``kill:R@S``              | SIGKILL replica R once step S is committed                        |
| ``hang:R@S:T``            | SIGSTOP replica R at step S, SIGCONT it T seconds later           |
| ``hang:R@S:+N``           | SIGSTOP replica R at step S, SIGCONT it once step S + N is committed (the others must be able to go on without it) |
| ``slow:R@S:F``            | from step S on, replica R runs F times slower (SIGSTOP duty cycle)|
| ``cpu:R@S:C``             | from step S on, replica R gets C CPUs (a cgroup CPU quota: a chip that turns slow; 0 lifts it) |
| ``kill_coordinator@S``    | SIGKILL whichever replica leads at step S                         |
| ``kill_healing@S``        | after step S, SIGKILL the next replica that starts healing        |
| ``kill_checkpoint@S``     | the leader dies right after writing model.safetensors of step S's checkpoint |
| ``sdc:SLOT@S:SITE:BITS[:WHEN]`` | wrong numbers: from step S on, corrupt one element of the value at tamper site SITE on the replica running on device slot SLOT |
| ``lr_spike@S:F``          | on every replica, the learning rate of step S times F (a negative control: a real instability, no chip at fault) |

plus ``kill_rate`` (kills per second, Poisson, replica chosen by the seeded RNG) and
``cpu_quotas`` (CPUs per replica from the start: chips of different speeds, ``tenacia.chaos.cpuquota``).

Link entries change the emulated network of a run started under ``tenacia chaos link`` (which
applies them; a run without a lab ignores them with a note). AT is a committed step ``S`` or a time
``Ts``: seconds after the first committed step (``30s``, ``2.5s``):

| entry                     | change                                                           |
|---------------------------|------------------------------------------------------------------|
| ``link_delay@AT:MS``      | from AT on, every packet's one-way delay is MS milliseconds (packets in flight keep theirs) |
| ``link_rate@AT:MBIT``     | from AT on, each node's sending rate is capped at MBIT megabit/s (0: no cap) |
| ``link_loss@AT:P``        | from AT on, each packet is lost with probability P (0 <= P < 1, seeded by ``chaos.seed``) |
| ``partition:N@AT:T``      | at AT, node N (the namespace of this host's replicas N, N + nodes, ...) is cut off the link for T seconds |

Wrong numbers (``tenacia.chaos.sdc`` injects them in-process, through ``tenacia.hooks.tamper``):
- SITE: one of ``SDC_SITES`` (``tenacia.hooks.TAMPER_SITES`` but ``lr``); SLOT: the device slot
  (a fresh job runs replica R on slot R);
- BITS, what happens to one float32 element: ``sign`` (bit 31), ``exponent`` (bit 30, the top
  exponent bit), ``mantissa_high`` (one of bits 18..22), ``mantissa_low`` (one of bits 0..4),
  ``multi`` (3 distinct bits of the 32), ``nan``, ``inf``, ``zero`` (stuck at 0.0);
- WHEN: ``once`` (default, transient: the first call at a step >= S), ``every`` (persistent:
  every call from S on, re-executions of a step included) or ``q=P`` (intermittent: each call
  from S on, with probability 0 < P <= 1).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .config import ConfigError, check

KILL_POINTS = ("mid_step", "between_steps", "phase:compute", "phase:allreduce", "phase:vote", "phase:idle",
               "phase:apply", "speculating:<replica>", "checkpoint:<file>", "checkpoint:renamed")
KINDS = ("kill", "hang", "slow", "cpu", "kill_coordinator", "kill_healing", "kill_checkpoint")
NUMERIC_KINDS = ("sdc", "lr_spike")
SDC_SITES = ("params", "moments", "activations", "local_grads", "reduced_grads", "loss", "vote")
BITS = ("sign", "exponent", "mantissa_high", "mantissa_low", "multi", "nan", "inf", "zero")
WHENS = ("once", "every", "q=<prob> with 0 < prob <= 1")
_ENTRY = re.compile(r"^(?P<kind>[a-z_]+)(?::(?P<replica>\d+))?@(?P<step>\d+)(?::(?P<param>\+?[0-9.]+))?$")
_SDC = re.compile(r"^sdc:(?P<slot>\d+)@(?P<step>\d+):(?P<site>[^:]*):(?P<bits>[^:]*)(?::(?P<when>[^:]*))?$")
_LR_SPIKE = re.compile(r"^lr_spike@(?P<step>\d+):(?P<factor>[^:]+)$")
LINK_KINDS = ("link_delay", "link_rate", "link_loss", "partition")
_LINK = re.compile(r"^(?P<kind>[a-z_]+)(?::(?P<node>\d+))?@(?P<at>\d+(?:\.\d+)?s|\d+):(?P<value>[0-9.]+)$")
_ALLOWED_LINK = "link_delay@AT:MS, link_rate@AT:MBIT, link_loss@AT:P, partition:NODE@AT:SECONDS (AT: STEP or SECONDSs)"
_ALLOWED = ("kill:R@S, hang:R@S:SECONDS, hang:R@S:+STEPS, slow:R@S:FACTOR, cpu:R@S:CPUS, kill_coordinator@S, kill_healing@S, "
            "kill_checkpoint@S")
_ALLOWED_SDC = "sdc:SLOT@STEP:SITE:BITS[:WHEN]"
_ALLOWED_SPIKE = "lr_spike@STEP:FACTOR"
_ALLOWED_ALL = f"{_ALLOWED}, {_ALLOWED_SDC}, {_ALLOWED_SPIKE}, {_ALLOWED_LINK}"


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
    param: float | None = None  # seconds for hang, factor for slow, CPUs for cpu
    resume_after: int | None = None  # hang:R@S:+N: SIGCONT once step S + N is committed (param None)

    @property
    def spec(self) -> str:
        who = f":{self.replica}" if self.replica is not None else ""
        extra = f":{self.param:g}" if self.param is not None else ""
        extra = f":+{self.resume_after}" if self.resume_after is not None else extra
        return f"{self.kind}{who}@{self.step}{extra}"


def parse_fault(text: str, field_name: str = "faults") -> Fault:
    m = _ENTRY.match(text.strip())
    if not m or m["kind"] not in KINDS:
        raise ConfigError(field_name, text, f"one of {_ALLOWED}")
    kind, replica = m["kind"], m["replica"]
    needs_replica = kind in ("kill", "hang", "slow", "cpu")
    if needs_replica != (replica is not None):
        raise ConfigError(field_name, text, f"{kind} {'needs' if needs_replica else 'takes no'} replica number; {_ALLOWED}")
    needs_param = kind in ("hang", "slow", "cpu")
    if needs_param != (m["param"] is not None):
        raise ConfigError(field_name, text, f"{kind} {'needs' if needs_param else 'takes no'} ':value'; {_ALLOWED}")
    replica = int(replica) if replica is not None else None
    if m["param"] and m["param"].startswith("+"):
        if kind != "hang" or not m["param"][1:].isdigit() or int(m["param"][1:]) < 1:
            raise ConfigError(field_name, text, f"':+STEPS' (a whole number >= 1) only after hang; {_ALLOWED}")
        return Fault(kind, int(m["step"]), replica, resume_after=int(m["param"][1:]))
    param = float(m["param"]) if m["param"] else None
    if kind == "slow" and param is not None and param < 1:
        raise ConfigError(field_name, text, "a slow-down factor >= 1")
    return Fault(kind, int(m["step"]), replica, param)


@dataclass(frozen=True, slots=True)
class NumericFault:
    """A wrong number (``sdc:...``): from ``step`` on, one element at ``site`` on device slot
    ``slot`` is corrupted as ``bits`` says, ``when`` (``once``, ``every``, or ``q``: each call
    with probability ``q``)."""

    slot: int
    step: int
    site: str
    bits: str
    when: str = "once"
    q: float = 1.0  # the probability per call; 1 unless when == "q"

    @property
    def spec(self) -> str:
        when = {"once": "", "every": ":every"}.get(self.when, f":q={self.q:g}")
        return f"sdc:{self.slot}@{self.step}:{self.site}:{self.bits}{when}"


@dataclass(frozen=True, slots=True)
class LrSpike:
    """``lr_spike@S:F``: on every replica, the learning rate of step ``step`` times ``factor``."""

    step: int
    factor: float

    @property
    def spec(self) -> str:
        return f"lr_spike@{self.step}:{self.factor:g}"


@dataclass(frozen=True, slots=True)
class LinkChange:
    """A change of the emulated link (``link_delay``, ``link_rate``, ``link_loss``, ``partition``)
    at committed step ``step`` or ``seconds`` after the first committed step (one of the two)."""

    kind: str
    value: float  # milliseconds, megabit/s, a probability, or seconds of partition
    step: int | None = None
    seconds: float | None = None
    node: int | None = None  # partition only

    @property
    def spec(self) -> str:
        who = f":{self.node}" if self.node is not None else ""
        at = str(self.step) if self.step is not None else f"{self.seconds:g}s"
        return f"{self.kind}{who}@{at}:{self.value:g}"


def _parse_link(text: str, field_name: str) -> LinkChange:
    m = _LINK.match(text)
    check(m is not None and m["kind"] in LINK_KINDS, field_name, text, f"{_ALLOWED_LINK} (e.g. link_delay@30s:50)")
    kind, value = m["kind"], float(m["value"])
    check((m["node"] is not None) == (kind == "partition"), field_name, text,
          f"a node number with partition only: {_ALLOWED_LINK}")
    check(kind != "link_loss" or value < 1, field_name, text, "link_loss@AT:P with 0 <= P < 1")
    check(kind != "partition" or value > 0, field_name, text, "partition:NODE@AT:SECONDS with SECONDS > 0")
    at = m["at"]
    return LinkChange(kind, value, step=None if at.endswith("s") else int(at),
                      seconds=float(at[:-1]) if at.endswith("s") else None,
                      node=int(m["node"]) if m["node"] is not None else None)


def _parse_sdc(text: str, field_name: str) -> NumericFault:
    m = _SDC.match(text)
    if not m:
        raise ConfigError(field_name, text, f"{_ALLOWED_SDC} (e.g. sdc:1@20:local_grads:exponent:every)")
    check(m["site"] in SDC_SITES, field_name, text, f"{_ALLOWED_SDC} with SITE one of {', '.join(SDC_SITES)}")
    check(m["bits"] in BITS, field_name, text, f"{_ALLOWED_SDC} with BITS one of {', '.join(BITS)}")
    when, q = m["when"] or "once", 1.0
    if when.startswith("q="):
        try:
            q = float(when[2:])
        except ValueError:
            q = math.nan
        when = "q"
    check(when in ("once", "every", "q") and 0 < q <= 1, field_name, text,
          f"{_ALLOWED_SDC} with WHEN one of {', '.join(WHENS)}")
    return NumericFault(int(m["slot"]), int(m["step"]), m["site"], m["bits"], when, q)


def _parse_lr_spike(text: str, field_name: str) -> LrSpike:
    m = _LR_SPIKE.match(text)
    try:
        factor = float(m["factor"]) if m else math.nan
    except ValueError:
        factor = math.nan
    check(math.isfinite(factor) and factor > 0, field_name, text,
          f"{_ALLOWED_SPIKE} with FACTOR a finite number > 0 (e.g. lr_spike@30:10)")
    return LrSpike(int(m["step"]), factor)


def parse_entry(text: str, field_name: str = "faults") -> Fault | NumericFault | LrSpike | LinkChange:
    """Any schedule entry: a process fault (``parse_fault``), a wrong number, an lr spike or a
    change of the link."""
    text = text.strip()
    kind = re.match(r"^[a-z_]*", text)[0]
    if kind in LINK_KINDS:
        return _parse_link(text, field_name)
    if kind == "sdc":
        return _parse_sdc(text, field_name)
    if kind == "lr_spike":
        return _parse_lr_spike(text, field_name)
    if kind not in KINDS:
        raise ConfigError(field_name, text, f"one of {_ALLOWED_ALL}")
    return parse_fault(text, field_name)


def process_faults(chaos: ChaosConfig) -> list[Fault]:
    """The schedule's faults sent to processes (``tenacia.chaos.injector``), in schedule order."""
    return [f for f in map(parse_entry, chaos.faults) if isinstance(f, Fault)]


def numeric_faults(chaos: ChaosConfig) -> list[NumericFault | LrSpike]:
    """The schedule's wrong numbers and lr spikes (``tenacia.chaos.sdc``), in schedule order."""
    return [f for f in map(parse_entry, chaos.faults) if isinstance(f, NumericFault | LrSpike)]


def link_changes(chaos: ChaosConfig) -> list[LinkChange]:
    """The schedule's changes of the emulated link (``tenacia chaos link``), in schedule order."""
    return [f for f in map(parse_entry, chaos.faults) if isinstance(f, LinkChange)]


@dataclass(kw_only=True, slots=True)
class ChaosConfig:
    """Faults to inject into this run, deterministically by step or by seed."""

    kill_at: str = ""  # one in-process kill point '<point>@<step>' (module docstring)
    faults: list[str] = field(default_factory=list)  # schedule entries (module docstring)
    kill_rate: float = 0.0  # random kills per second across the job (Poisson), replica drawn by seed
    kill_rate_duration_s: float = 3600.0  # window over which random kills are drawn, from the first committed step
    cpu_quotas: list[float] = field(default_factory=list)  # CPUs per replica id from the start (0: no limit); [] none
    seed: int = 0

    def __post_init__(self) -> None:
        parse_kill_point(self.kill_at)
        for i, text in enumerate(self.faults):
            parse_entry(text, f"faults[{i}]")
        check(self.kill_rate >= 0, "kill_rate", self.kill_rate, "a number of kills per second >= 0")
        for i, cores in enumerate(self.cpu_quotas):
            check(isinstance(cores, (int, float)) and math.isfinite(cores) and cores >= 0, f"cpu_quotas[{i}]",
                  cores, "a number of CPUs >= 0 (0: no limit), e.g. [0.5, 0.5, 0.25, 0.125]")
        check(self.kill_rate_duration_s > 0, "kill_rate_duration_s", self.kill_rate_duration_s,
              "a positive number of seconds")

    @property
    def any(self) -> bool:
        """Whether this run asks for any fault at all."""
        return bool(self.kill_at or self.faults or self.kill_rate or any(self.cpu_quotas))
