"""Live-recovery inputs measured by a tenacia run, read from its event log.

Schema: docs/events.md. Detection = ``failure_detected.detection_s``; stall =
``quorum_changed.stall_s``; healing = ``heal_done.heal_s``; where a log has no such field (tenacia's
replicas write neither of the first two), per fault as ``tenacia report`` measures it. The plan uses the median of each
(robust to one slow outlier); a quantity with no sample keeps its configured value.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError
from ..events import read_events

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
