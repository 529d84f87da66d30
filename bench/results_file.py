"""Where a benchmark's results go, and what every results file records beside its own figures.

``write_results(name, doc)`` writes ``bench/results/<name>-<YYYYmmdd-HHMMSS>.json`` (or ``path``
when the bench takes one) with three keys added unless the bench set them itself: ``date``
(local time, to the minute), ``command`` (how to run it again) and ``machine`` (the CPU model
and, on x86, its family/model numbers, the instruction sets that choose a kernel, cores, the load
averages when it finished, torch's and Python's versions and the commit). ``docs/benchmarks.md`` cites these files; bench/results is not
committed, so the doc carries the figures and this file carries how they were got.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    """What a figure was measured on: enough to tell two machines' results apart."""
    from tenacia.device import NOTABLE_ISAS, cpu_features, cpu_model

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    family_model = None
    try:  # x86: the family and model numbers tell CPU generations apart where the name does not ("AMD EPYC")
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines()[:30] if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        if "cpu family" in info:
            family_model = f"{info['cpu family']}/{info.get('model', '?')}"
    except OSError:
        pass
    return {"cpu": cpu_model(), "cpu_family_model": family_model,
            "isas": [i for i in NOTABLE_ISAS if i in cpu_features()], "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "torch": torch_version,
            "python": platform.python_version(), "commit": commit}


def write_results(name: str, doc: dict[str, Any], path: Path | None = None, *, indent: int = 2) -> Path:
    """Write ``doc`` (plus ``date``, ``command`` and ``machine`` where it lacks them) as JSON and
    return the path; ``name`` is the bench's short name (``link``, ``moe``...)."""
    full = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join([".venv/bin/python", *sys.argv]),
            "machine": machine(), **doc}
    if path is None:
        path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(full, indent=indent, default=str) + "\n")
    return path
