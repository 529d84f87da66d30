"""Replicas on chips of different speeds: ``chaos.cpu_quotas`` holds each replica id to a number of
CPUs through a cgroup from the start, ``cpu:R@S:C`` slows one mid-run, and a replica restarted
after a crash lands in its id's cgroup again. Real processes, real gloo, real cgroups (root and a
cpu controller needed). The run's proofs hold: no one is taken for failed, the ledger is exact,
the cgroups are gone afterwards."""

import json

import pytest

from tenacia.chaos import cpuquota
from tenacia.events import read_events

from .procs import train_args

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(cpuquota.available() is not None, reason=str(cpuquota.available()))]
STEPS = 40


def groups() -> set[str]:
    """The tenacia cgroups on this machine (of any owner)."""
    _, root = cpuquota._layout()
    return {p.name for p in root.iterdir() if cpuquota._NAME.match(p.name)}


def test_quotas_follow_replica_ids_through_a_restart(tmp_path, procs):
    before = groups()
    faults = ["cpu:0@10:0.5", "kill:1@20"]
    args = train_args(tmp_path, f"train.steps={STEPS}", "checkpoint.every=0", "replicas.count=2",
                      "chaos.cpu_quotas=[0, 0.5]", f"chaos.faults={json.dumps(faults)}")
    assert procs.run(args, timeout=240, log=tmp_path / "launcher.log") == 0, (tmp_path / "launcher.log").read_text()[-3000:]
    events = read_events(tmp_path / "events.jsonl")
    placed = [(e["replica"], e["pid"], e["cpus"]) for e in events if e["event"] == "cpu_quota"]
    ones = [p for p in placed if p[0] == 1]
    assert len({pid for _, pid, _ in ones}) >= 2 and all(c == 0.5 for *_, c in ones), placed  # restarted, placed again
    assert [c for r, _, c in placed if r == 0] == [0.5], placed  # replica 0 only once its cpu: fault fired
    assert not [e for e in events if e["event"] == "failure_detected" and e["kind"] == "hang"]
    assert procs.run(["report", "--check", str(tmp_path)], timeout=120, log=tmp_path / "report.log") == 0, \
        (tmp_path / "report.log").read_text()[-2000:]
    assert groups() <= before  # every cgroup this run made is gone
