"""SIGTERM to the launcher stops this host's replicas and its spare, and the launcher exits 143.
Real processes: the launcher, a warm spare and the two replicas it forked."""

import signal
from pathlib import Path

import pytest

from tenacia.events import read_events
from tenacia.train.replicas.launcher import EXIT_TERMINATED

from .procs import train_args, wait_for

pytestmark = pytest.mark.timeout(240)


def children_of(pid: int) -> set[int]:
    """The processes under ``pid``: its children and theirs (the spare's forked replicas)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields after the name: state, ppid, ...
            out.add(int(stat.parent.name))
    for child in list(out):
        out |= children_of(child)
    return out


def test_sigterm_stops_the_replicas_and_the_spare(tmp_path, procs):
    launcher = procs.start(train_args(tmp_path, "train.steps=100000", "replicas.count=2", "replicas.spares=1"),
                           log=tmp_path / "launcher.log")
    log = tmp_path / "events.jsonl"
    wait_for(lambda: any(e["event"] == "step_committed" and e["step"] >= 3 for e in read_events(log)), 180,
             "training under way")
    kids = children_of(launcher.pid)
    wait_for(lambda: len(kids | children_of(launcher.pid)) >= 3, 30, "two replicas and the spare")
    kids |= children_of(launcher.pid)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=30) == EXIT_TERMINATED, (tmp_path / "launcher.log").read_text()[-3000:]
    assert [p for p in kids if Path(f"/proc/{p}").exists()] == []  # every child reaped, none left running
    stopped = [e for e in read_events(log) if e["event"] == "launcher_stopped"]
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGTERM"
    assert not (tmp_path / "finished.json").exists()
