"""A finished run is immutable: a leader frozen (SIGSTOP) until the others have finished the job
without it, then continued (SIGCONT), claims no term, writes nothing to the ledger or the event
log, and exits 0, so its launcher ends too. Real processes, real signals.

The one thing it may still write is the record of a step it had committed before it was stopped:
the leader appends a step to the ledger, sends the verdict, then logs ``step_committed``, and a
SIGSTOP can land between the two (it did once in a fresh-clone CI). That record is late, not new:
its step is in the ledger under the frozen leader's term and was logged by no one else."""

import json
import os
import signal

import pytest

from tenacia.events import read_events

from .procs import train_args, wait_for

STEPS = 80
LIMIT_S = 180
pytestmark = pytest.mark.timeout(LIMIT_S + 60)


def test_a_leader_frozen_until_after_the_finish_changes_nothing_when_continued(tmp_path, procs):
    args = train_args(tmp_path, f"train.steps={STEPS}", "checkpoint.every=40", "optim.warmup_steps=10",
                      "replicas.count=3", "replicas.spares=0")
    launcher = procs.start(args, log=tmp_path / "launcher.log")
    events = tmp_path / "events.jsonl"

    def all_three_committed() -> bool:
        return events.exists() and any(e["event"] == "step_committed" and e.get("members") == [0, 1, 2]
                                       and e["step"] >= 20 for e in read_events(events))

    wait_for(all_three_committed, LIMIT_S, "a step of all three replicas")
    leader = json.loads((tmp_path / "replicas" / "r0.json").read_text())["pid"]  # replica 0 leads term 1
    os.kill(leader, signal.SIGSTOP)
    try:
        wait_for(lambda: any(e["event"] == "run_finished" for e in read_events(events)), LIMIT_S,
                 "the others to finish the job")
        ledger, terms = (tmp_path / "ledger.jsonl").read_bytes(), sorted(os.listdir(tmp_path / "terms"))
        count = len(read_events(events))
    finally:
        os.kill(leader, signal.SIGCONT)
    assert launcher.wait(timeout=LIMIT_S) == 0, (tmp_path / "launcher.log").read_text()[-3000:]
    assert (tmp_path / "ledger.jsonl").read_bytes() == ledger
    assert sorted(os.listdir(tmp_path / "terms")) == terms and len(terms) >= 2
    before, later = read_events(events)[:count], read_events(events)[count:]
    logged = {e["step"] for e in before if e["event"] == "step_committed"}
    own = {r["step"] for r in map(json.loads, ledger.splitlines()) if r["kind"] == "step" and r["term"] == 1}
    late = [e for e in later if e["source"] != "launcher"]
    assert all(e["event"] == "step_committed" and e["source"] == "coordinator:0" and e["step"] in own
               and e["step"] not in logged for e in late) and len(late) <= 1, later
    assert procs.run(["report", "--check", str(tmp_path)], timeout=120, log=tmp_path / "report.log") == 0, \
        (tmp_path / "report.log").read_text()[-2000:]
    assert f"sample ledger: ok: {STEPS} committed steps" in (tmp_path / "report.log").read_text()
