"""`tenacia report --check` on run directories written with the real ledger and event log: a run
that proves itself exits 0 and prints both facts; a ledger that consumed a sample twice, replicas
whose final states differ, or a run directory from before the sampler was recorded do not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tenacia.data.ledger import SampleLedger
from tenacia.data.sampler import Sampler

SAMPLES, SEED, BATCH, STEPS = 50, 7, 8, 12  # 96 samples: the run crosses into a second epoch


def write_run(run: Path, *, fingerprints: dict[int, str], with_sampler: bool = True, twice: bool = False) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    sampler = Sampler(SAMPLES, SEED)
    with SampleLedger(run / "ledger.jsonl") as ledger:
        ledger.rewind(0)
        for step in range(1, STEPS + 1):
            start = sampler.position
            ids = sampler.ids_at(start, BATCH)
            if twice and step == 5:
                ids[1] = ids[0]  # one sample trained on twice, another never
            ledger.record(step, start, ids)
            sampler.advance(BATCH)
    started = {"t": 0.0, "event": "run_started", "step": 0, "replicas": len(fingerprints)}
    events = [{**started, "replica": r, **({"samples": SAMPLES, "sampler_seed": SEED} if with_sampler else {})}
              for r in fingerprints]
    events += [{"t": 1.0, "event": "state_fingerprint", "step": STEPS - 1, "replica": r, "fingerprint": "old"}
               for r in fingerprints]  # an earlier step's fingerprints do not count
    events += [{"t": 2.0, "event": "state_fingerprint", "step": STEPS, "replica": r, "fingerprint": fp}
               for r, fp in fingerprints.items()]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def report(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tenacia", "report", "--check", str(run)], capture_output=True,
                          text=True, timeout=120)


def test_a_run_that_proves_itself_exits_0_and_prints_both_facts(tmp_path):
    done = report(write_run(tmp_path / "run", fingerprints={0: "abc", 1: "abc", 2: "abc"}))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sample ledger: ok: {STEPS} committed steps, {STEPS * BATCH} samples" in done.stdout
    assert f"final state at step {STEPS}: 3 fingerprint(s) equal" in done.stdout
    assert (tmp_path / "run" / "report.json").exists()  # the report itself is still written


def test_a_sample_consumed_twice_fails_the_check_and_names_the_step(tmp_path):
    done = report(write_run(tmp_path / "run", fingerprints={0: "abc", 1: "abc"}, twice=True))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "sample ledger: FAILED" in done.stdout and "step 5" in done.stdout, done.stdout


def test_replicas_that_end_in_different_states_fail_the_check_and_are_listed(tmp_path):
    done = report(write_run(tmp_path / "run", fingerprints={0: "abc", 1: "abd"}))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 fingerprint(s) DIFFER (2 distinct)" in done.stdout
    assert "replica 0: abc" in done.stdout and "replica 1: abd" in done.stdout


def test_a_run_directory_without_its_sampler_cannot_be_checked_and_says_why(tmp_path):
    run = write_run(tmp_path / "run", fingerprints={0: "abc"}, with_sampler=False)
    done = report(run)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot check" in done.stdout and "records no sampler" in done.stdout
    plain = subprocess.run([sys.executable, "-m", "tenacia", "report", str(run)], capture_output=True, text=True,
                           timeout=120)
    assert plain.returncode == 0  # without --check the report is printed and the exit status is 0


def test_skipped_samples_and_a_deposed_leaders_records_are_counted_and_printed(tmp_path):
    run = write_run(tmp_path / "run", fingerprints={0: "abc", 1: "abc"})
    start = STEPS * BATCH
    with SampleLedger(run / "ledger.jsonl") as ledger:
        # the leader of term 1 drops the batch drawn for step 13; then the old leader of term 0,
        # paused between its fence check and its write, records a step 12 of its own
        ledger.skip(STEPS + 1, start, Sampler(SAMPLES, SEED).ids_at(start, BATCH), "loss not finite", term=1)
        ledger.record(STEPS, start - BATCH, [0] * BATCH, term=0)
    done = report(run)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (f"sample ledger: ok: {STEPS} committed steps, {STEPS * BATCH} samples, {BATCH} skipped, "
            "1 stale record(s) ignored") in done.stdout, done.stdout
