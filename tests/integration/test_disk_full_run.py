"""Replicas whose checkpoint disk is full (a real 1 MB tmpfs on RUN_DIR/checkpoints, smaller than
one checkpoint): every save fails, each failure is named once in the event log and the launcher's
output, no replica exits, nothing is left behind, and the run finishes with an exact ledger."""


import pytest

from tenacia.events import read_events
from tests.tmpfs import small_tmpfs

from .procs import train_args

STEPS = 60
LIMIT_S = 180
pytestmark = pytest.mark.timeout(LIMIT_S + 60)


def test_a_full_checkpoint_disk_costs_the_checkpoints_not_the_run(tmp_path, procs):
    with small_tmpfs(tmp_path / "checkpoints", "1m") as disk:
        args = train_args(tmp_path, f"train.steps={STEPS}", "checkpoint.every=20", "optim.warmup_steps=10",
                          "replicas.count=3", "replicas.spares=0", "train.progress=true")
        code = procs.run(args, timeout=LIMIT_S, log=tmp_path / "launcher.log")
        leftovers = sorted(p.name for p in disk.iterdir())
    out = (tmp_path / "launcher.log").read_text()
    assert code == 0, out[-3000:]
    events = read_events(tmp_path / "events.jsonl")
    failed = [e for e in events if e["event"] == "checkpoint_failed"]
    assert sorted(e["step"] for e in failed) == [20, 40, STEPS], failed  # each interval tried, each named once
    assert all(e["errno"] == "ENOSPC" for e in failed)
    assert out.count("checkpoint FAILED") == len(failed), out[-3000:]
    assert not [e for e in events if e["event"] in ("replica_exited", "replica_restarted")]
    assert leftovers == []  # no .tmp-step_* debris
    assert procs.run(["report", "--check", str(tmp_path)], timeout=120, log=tmp_path / "report.log") == 0, \
        (tmp_path / "report.log").read_text()[-2000:]
    assert f"sample ledger: ok: {STEPS} committed steps" in (tmp_path / "report.log").read_text()
