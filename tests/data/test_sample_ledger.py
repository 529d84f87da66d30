"""The sample ledger: it proves exactly-once consumption and catches gaps, duplicates and wrong ids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tenacia.data.ledger import SampleLedger
from tenacia.data.sampler import Sampler

N, SEED, BATCH = 10, 4, 4


def train(ledger: SampleLedger, sampler: Sampler, first_step: int, last_step: int) -> None:
    """What the trainer does per committed step: peek, (step commits), record, advance."""
    for step in range(first_step, last_step + 1):
        ids = sampler.peek(BATCH)
        ledger.record(step, sampler.position, ids)
        sampler.advance(BATCH)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """A clean ledger of 7 steps over 2.8 epochs."""
    path = tmp_path / "ledger.jsonl"
    with SampleLedger(path, fsync=True) as ledger:
        train(ledger, Sampler(N, SEED), 1, 7)
    return path


def test_clean_run_verifies(ledger_path: Path) -> None:
    report = SampleLedger(ledger_path).verify(SEED, N)
    assert report.ok and report.problem is None
    assert (report.steps, report.samples, report.truncated_tail) == (7, 28, False)
    first = lines(ledger_path)[0]
    assert first == {"kind": "step", "step": 1, "start": 0, "ids": Sampler(N, SEED).peek(BATCH), "term": 0}
    # The same ledger read with the wrong sampler does not verify.
    assert not SampleLedger(ledger_path).verify(SEED + 1, N).ok
    assert not SampleLedger(ledger_path).verify(SEED, N + 1).ok


def test_gap_is_detected(ledger_path: Path) -> None:
    records = lines(ledger_path)
    for r in records[3:]:  # as if step 4 had consumed 4 samples nobody recorded
        r["start"] += BATCH
    for r in records[3:]:
        r["ids"] = Sampler(N, SEED).ids_at(r["start"], BATCH)
    rewrite(ledger_path, records)
    report = SampleLedger(ledger_path).verify(SEED, N)
    assert not report.ok
    assert report.problem == "line 4 (step 4): starts at position 16, expected 12: positions 12..15 skipped"


def test_duplicate_is_detected(ledger_path: Path) -> None:
    records = lines(ledger_path)
    records[1]["ids"][2] = records[1]["ids"][0]  # step 2 trains twice on one sample
    rewrite(ledger_path, records)
    report = SampleLedger(ledger_path).verify(SEED, N)
    assert not report.ok
    assert report.problem == (f"line 2 (step 2): sample {records[1]['ids'][0]} at position 6 was already "
                              "consumed at position 4 in epoch 0")


def test_replayed_batch_is_detected(ledger_path: Path) -> None:
    records = lines(ledger_path)
    records.insert(3, dict(records[2], step=4))  # step 3's batch again as step 4, the rest shifted
    for r in records[4:]:
        r["step"] += 1
    rewrite(ledger_path, records)
    report = SampleLedger(ledger_path).verify(SEED, N)
    assert report.problem == "line 4 (step 4): starts at position 8, expected 12: positions 8..11 consumed twice"


def test_wrong_id_is_detected(ledger_path: Path) -> None:
    records = lines(ledger_path)
    unseen = Sampler(N, SEED).order(0)[9].item()  # consumed at position 9, not yet at step 1
    records[0]["ids"][1] = unseen
    rewrite(ledger_path, records)
    expected = Sampler(N, SEED).order(0)[1].item()
    report = SampleLedger(ledger_path).verify(SEED, N)
    assert report.problem == (f"line 1 (step 1): position 1 holds sample {unseen}, but the sampler "
                              f"(seed={SEED}, num_samples={N}) puts sample {expected} there")


def test_steps_must_be_consecutive_from_one(ledger_path: Path) -> None:
    records = lines(ledger_path)
    rewrite(ledger_path, records[:2] + records[3:])
    assert SampleLedger(ledger_path).verify(SEED, N).problem == \
        "line 3: step 4 follows step 2; steps must run 1, 2, 3, ... (only a rewind may go back)"
    rewrite(ledger_path, records[1:])
    assert SampleLedger(ledger_path).verify(SEED, N).problem.startswith("line 1: step 2 follows step 0")


def test_rewind_discards_later_steps(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    sampler = Sampler(N, SEED)
    ledger = SampleLedger(path)
    train(ledger, sampler, 1, 3)
    checkpoint = sampler.state_dict()  # the checkpoint of step 3
    train(ledger, sampler, 4, 6)  # steps 4..6 committed, then the process died
    ledger.record(7, 999, [1, 1, 1])  # garbage that the rewind must discard
    ledger.close()

    resumed_sampler = Sampler(N, SEED)
    resumed_sampler.load_state_dict(checkpoint)
    with SampleLedger(path) as resumed:
        resumed.rewind(3)
        train(resumed, resumed_sampler, 4, 9)
    report = SampleLedger(path).verify(SEED, N)
    assert report.ok, report.problem
    assert (report.steps, report.samples) == (9, 36)

    with SampleLedger(path) as again:
        again.rewind(12)  # a checkpoint newer than anything recorded: committed steps went unrecorded
    report = SampleLedger(path).verify(SEED, N)
    assert report.problem.endswith("rewind to step 12, but the ledger only holds steps up to 9: "
                                   "committed steps were not recorded")


def test_rewind_then_skipping_the_resumed_sampler_state_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    sampler = Sampler(N, SEED)
    with SampleLedger(path) as ledger:
        train(ledger, sampler, 1, 5)
        ledger.rewind(3)  # resumed from step 3, but kept the sampler of step 5: positions 12..19 lost
        train(ledger, sampler, 4, 4)
    assert SampleLedger(path).verify(SEED, N).problem == \
        "line 7 (step 4): starts at position 20, expected 12: positions 12..19 skipped"


def test_truncated_last_line_is_tolerated_then_repaired(ledger_path: Path) -> None:
    with open(ledger_path, "ab") as f:
        f.write(b'{"kind":"step","step":8,"start":28,"ids":[3,')  # a crash mid-write
    report = SampleLedger(ledger_path).verify(SEED, N)
    assert report.ok and report.truncated_tail and report.steps == 7

    sampler = Sampler(N, SEED)
    sampler.advance(28)
    with SampleLedger(ledger_path) as ledger:  # the next writer cuts the partial line first
        train(ledger, sampler, 8, 9)
    report = SampleLedger(ledger_path).verify(SEED, N)
    assert report.ok and not report.truncated_tail and report.steps == 9
    assert ledger_path.read_text().count("\n") == 9


def test_corrupt_middle_line_and_missing_file(ledger_path: Path, tmp_path: Path) -> None:
    text = ledger_path.read_text().splitlines()
    text[2] = text[2][:20]
    ledger_path.write_text("\n".join(text) + "\n")
    assert SampleLedger(ledger_path).verify(SEED, N).problem.startswith("line 3: not a JSON record")
    report = SampleLedger(tmp_path / "none.jsonl").verify(SEED, N)
    assert not report.ok and "no ledger file" in report.problem
    with pytest.raises(ValueError, match="step >= 1"):
        SampleLedger(tmp_path / "x.jsonl").record(0, 0, [1])


WRITER = """
import sys
from tenacia.data.ledger import SampleLedger
from tenacia.data.sampler import Sampler

ledger, sampler = SampleLedger(sys.argv[1]), Sampler(10, 4)
resume_step = int(sys.argv[2])
if resume_step:
    ledger.rewind(resume_step)
    sampler.advance(4 * resume_step)
step = resume_step
print("ready", flush=True)
while True:
    step += 1
    ledger.record(step, sampler.position, sampler.peek(4))
    sampler.advance(4)
"""


def test_kill_9_writer_then_resume_verifies(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 20
        while (not path.exists() or path.stat().st_size < 20_000) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(timeout=10) == -9
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    report = SampleLedger(path).verify(4, 10)
    assert report.ok, report.problem
    assert report.steps > 100
    # Resume from an older "checkpoint" in a fresh process; it runs until killed again.
    resume = report.steps // 2
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(resume)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline() == "ready\n"
        size = path.stat().st_size
        deadline = time.monotonic() + 20
        while path.stat().st_size < size + 20_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    report = SampleLedger(path).verify(4, 10)
    assert report.ok, report.problem
    assert report.steps > resume
