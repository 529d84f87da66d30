"""Planner inputs measured by a tenacia run: live-recovery times from its event log, and the
link efficiency from a slow-link run's JSON (``read_link_calibration``).

Event-log schema: docs/events.md. Detection = ``failure_detected.detection_s``; stall =
``quorum_changed.stall_s``; healing = ``heal_done.heal_s``; where a log has no such field (tenacia's
replicas write neither of the first two), per fault as ``tenacia report`` measures it. The plan uses the median of each
(robust to one slow outlier); a quantity with no sample keeps its configured value.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, check
from ..events import read_events
from .links import COLLECTIVES, trips

SOURCES = {"detection_s": ("failure_detected", "detection_s"),
           "stall_s": ("quorum_changed", "stall_s"),
           "heal_s": ("heal_done", "heal_s")}


@dataclass(kw_only=True, slots=True, frozen=True)
class Calibration:
    run_dir: str
    medians: dict[str, float]  # recovery field -> median seconds, only fields with samples
    samples: dict[str, int]  # recovery field -> number of samples

    def summary(self) -> dict:
        return {"run_dir": self.run_dir, "medians": self.medians, "samples": self.samples}


def _raw(events: list[dict], key: str) -> bool:
    kind, field_name = SOURCES[key]
    return any(e["event"] == kind and e.get(field_name) is not None for e in events)


def read_calibration(run_dir: str | Path) -> Calibration:
    """Medians of the measured recovery times in ``<run_dir>/events.jsonl``. Raises ConfigError
    when the file is missing or holds none of the three measurements."""
    path = Path(run_dir) / "events.jsonl"
    if not path.is_file():
        raise ConfigError("calibrate", str(run_dir), f"a tenacia run directory containing events.jsonl ({path} not found)")
    from ..report.summary import faults

    events = read_events(path)
    values: dict[str, list[float]] = {key: [] for key in SOURCES}
    for event in events:
        for key, (kind, field_name) in SOURCES.items():
            value = event.get(field_name)
            if event["event"] == kind and isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                values[key].append(float(value))
    # tenacia's replicas log no detection_s or quorum stall of their own: take them per fault as
    # `tenacia report` measures them (from the injection, and from the commits around the fault).
    for key in ("detection_s", "stall_s"):
        if not _raw(events, key):
            values[key] = [float(r[key]) for r in faults(events) if isinstance(r.get(key), (int, float)) and r[key] >= 0]
    medians = {key: statistics.median(v) for key, v in values.items() if v}
    if not medians:
        raise ConfigError("calibrate", str(run_dir),
                          "a run whose events.jsonl has failure_detected.detection_s, quorum_changed.stall_s "
                          "or heal_done.heal_s values (a run with at least one recovered failure)")
    return Calibration(run_dir=str(run_dir), medians=medians,
                       samples={key: len(v) for key, v in values.items()})


LINK_FIELDS = {"strategy": str, "tokens_per_s": float, "tokens_per_s_no_link": float, "bytes_per_token": float}
LINK_OPTIONAL = {"compression": str, "inner_steps": int, "exchanges_per_token": float, "utilization": float,
                 "overlapped": bool, "collective": str}


@dataclass(kw_only=True, slots=True, frozen=True)
class LinkCalibration:
    """The link efficiency (``sync.link.efficiency``) a measured run implies (``read_link_calibration``)."""

    path: str
    efficiency: float
    arms: list[dict]  # per arm: strategy, compression, measured and fitted extra seconds per token, used

    def summary(self) -> dict:
        return {"path": self.path, "efficiency": self.efficiency, "arms": self.arms}


def _number(value: object, where: str, kind: type) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        ok = ok and value == int(value) and value >= 1
    check(ok and value >= 0, where, value, "an integer >= 1" if kind is int else "a finite number >= 0")
    return float(value)


def read_link_calibration(path: str | Path) -> LinkCalibration:
    """Fit the link efficiency from a measured run's JSON (written by a training run or
    ``bench/slow_links.py``). Schema::

        {"link": {"rtt_ms": 100, "gbit_s": 0.1},  # the emulated link of every member (each its own)
         "members": 4,                             # replicas in each exchange: the ring's members
         "arms": [{"strategy": "diloco",           # ddp, diloco or streaming (a name; not checked)
                   "compression": "int8",          # optional: fp32, int8, int4, int2
                   "inner_steps": 50,              # optional
                   "tokens_per_s": 950.0,          # the run with the link
                   "tokens_per_s_no_link": 1000.0, # the same arm with no delay and no rate limit
                   "bytes_per_token": 40.0,        # all members' bytes over the links per trained token
                   "exchanges_per_token": 1e-4,    # optional (default 0): collectives per trained token
                   "utilization": 0.93,            # optional: tokens/s over the solo, no-sync tokens/s
                   "overlapped": false,            # optional (default: strategy == "streaming")
                   "collective": "reduce_scatter"}]}  # optional (default ring_allreduce): one of
                                                   # links.COLLECTIVES, the form each exchange took

    Per arm, the seconds the link adds per token, 1/tokens_per_s - 1/tokens_per_s_no_link, are
    modelled as its collective's latency, exchanges_per_token x trips x rtt/2 (``links.trips``: a
    ring all-reduce 2(members-1), a direct all-gather 1, the direct reduce-scatter 2), plus each member's
    bytes (bytes_per_token / members) at gbit_s x efficiency. The fit is least squares in
    1/efficiency over the arms whose exchange blocks (not ``overlapped``: what hides behind
    compute says nothing of the link's speed), capped at 1. Raises ConfigError naming the field
    for a missing or wrong value, or when no blocking arm spent time on its bytes.
    """
    where = f"calibrate-links {path}"
    file = Path(path)
    check(file.is_file(), "calibrate-links", str(path), "a path to an existing JSON file")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError("calibrate-links", str(path), f"valid JSON ({e})") from None
    check(isinstance(data, dict) and isinstance(data.get("link"), dict), f"{where}: link", data.get("link") if isinstance(data, dict) else data,
          "a table {\"rtt_ms\": ..., \"gbit_s\": ...}")
    rtt = _number(data["link"].get("rtt_ms"), f"{where}: link.rtt_ms", float)
    gbit = _number(data["link"].get("gbit_s"), f"{where}: link.gbit_s", float)
    check(gbit > 0, f"{where}: link.gbit_s", gbit, "a link rate in Gbit/s > 0")
    members = _number(data.get("members"), f"{where}: members", int)
    arms = data.get("arms")
    check(isinstance(arms, list) and bool(arms), f"{where}: arms", arms, "a non-empty list of measured arms")
    rate = gbit * 1e9 / 8
    xs, ys, out = [], [], []
    for i, arm in enumerate(arms):
        at = f"{where}: arms[{i}]"
        check(isinstance(arm, dict), at, arm, "a table of one arm's measurements")
        for key in arm:
            check(key in LINK_FIELDS or key in LINK_OPTIONAL, f"{at}.{key}", arm[key],
                  f"a known field: {', '.join([*LINK_FIELDS, *LINK_OPTIONAL])}")
        check(isinstance(arm.get("strategy"), str), f"{at}.strategy", arm.get("strategy"), "a strategy name")
        fast = _number(arm.get("tokens_per_s_no_link"), f"{at}.tokens_per_s_no_link", float)
        slow = _number(arm.get("tokens_per_s"), f"{at}.tokens_per_s", float)
        check(0 < slow <= fast * 1.001, f"{at}.tokens_per_s", slow,
              f"tokens/s > 0 and at most tokens_per_s_no_link = {fast:g} (a link does not speed a run up)")
        nbytes = _number(arm.get("bytes_per_token"), f"{at}.bytes_per_token", float)
        exchanges = _number(arm.get("exchanges_per_token", 0.0), f"{at}.exchanges_per_token", float)
        overlapped = arm.get("overlapped", arm["strategy"] == "streaming")
        check(isinstance(overlapped, bool), f"{at}.overlapped", overlapped, "true or false")
        collective = arm.get("collective", "ring_allreduce")
        check(collective in COLLECTIVES, f"{at}.collective", collective, f"one of {', '.join(COLLECTIVES)}")
        latency = trips(collective, members) * rtt / 2e3
        extra = 1 / slow - 1 / fast
        x, y = nbytes / members / rate, extra - exchanges * latency
        used = not overlapped and x > 0 and y > 0
        if used:
            xs.append(x)
            ys.append(y)
        out.append({"strategy": arm["strategy"], "compression": arm.get("compression"), "collective": collective,
                    "extra_s_per_token": extra, "x": x, "latency_s_per_token": exchanges * latency,
                    "utilization": arm.get("utilization"), "used": used})
    check(bool(xs), f"{where}: arms", len(arms),
          "at least one arm not overlapped whose link cost time beyond its latency (tokens_per_s below "
          "tokens_per_s_no_link) and moved bytes (bytes_per_token > 0)")
    efficiency = min(1.0, sum(x * x for x in xs) / sum(x * y for x, y in zip(xs, ys, strict=True)))
    for arm in out:
        arm["fitted_extra_s_per_token"] = arm.pop("latency_s_per_token") + arm.pop("x") / efficiency
    return LinkCalibration(path=str(path), efficiency=efficiency, arms=out)
