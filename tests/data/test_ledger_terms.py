"""The sample ledger's terms and skip records: a deposed leader's late records are ignored, a newer
term supersedes what an older one recorded at its step, skipped samples count as consumed once,
and a ledger written before records carried a term verifies exactly as it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tenacia.data.ledger import SampleLedger
from tenacia.data.sampler import Sampler

N, SEED, BATCH = 10, 4, 4


def step(n: int, term: int | None = None, *, start: int | None = None) -> dict:
    """The record of step ``n`` as the trainer writes it (batches of BATCH, no skips)."""
    start = (n - 1) * BATCH if start is None else start
    record = {"kind": "step", "step": n, "start": start, "ids": Sampler(N, SEED).ids_at(start, BATCH)}
    return record if term is None else {**record, "term": term}


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return path


def verify(path: Path):
    return SampleLedger(path).verify(SEED, N)


def test_a_ledger_written_before_terms_verifies_as_before(tmp_path: Path) -> None:
    # byte for byte what the landed version wrote: a run of 5 steps, a crash, a resume from 3
    old = [{"kind": "rewind", "step": 0}, *[step(n) for n in range(1, 6)], {"kind": "rewind", "step": 3},
           *[step(n) for n in range(4, 8)]]
    path = write(tmp_path / "ledger.jsonl", old)
    report = verify(path)
    assert report.ok, report.problem
    assert (report.steps, report.samples, report.ignored_stale, report.skips) == (7, 28, 0, 0)
    assert SampleLedger(path).newest_term() == 0
    # its problems are still found, with the same words
    write(path, old[:3] + old[4:])
    assert verify(path).problem == ("line 4: step 4 follows step 2; steps must run 1, 2, 3, ... "
                                    "(only a rewind may go back)")
    # and a replica run of this version may go on appending to it under its own term
    write(path, old)
    with SampleLedger(path) as ledger:
        ledger.rewind(7, term=2)
        ledger.record(8, 28, Sampler(N, SEED).ids_at(28, BATCH), term=2)
    assert verify(path).steps == 8 and SampleLedger(path).newest_term() == 2


def test_a_newer_term_supersedes_a_step_an_older_one_recorded(tmp_path: Path) -> None:
    # the split brain: the cut-off leader of term 3 committed step 3 alone, 30 ms before
    # term 4 committed step 3 with the others; term 4's step 3 is the one that counts
    bad = dict(step(3, 3), ids=[0, 0, 0, 0])  # whatever the deposed leader recorded
    path = write(tmp_path / "ledger.jsonl", [step(1, 3), step(2, 3), bad, step(3, 4), step(4, 4)])
    report = verify(path)
    assert report.ok, report.problem
    assert (report.steps, report.samples, report.ignored_stale) == (4, 16, 0)
    # it supersedes everything the older term recorded from that step on
    write(path, [step(1, 3), step(2, 3), step(3, 3), step(4, 3), step(3, 4)])
    assert (verify(path).ok, verify(path).steps) == (True, 3)
    # but it may not skip ahead of what was recorded
    write(path, [step(1, 3), step(2, 3), step(4, 4)])
    assert verify(path).problem.startswith("line 3: step 4 follows step 2")


def test_a_deposed_leaders_late_record_is_ignored(tmp_path: Path) -> None:
    # term 3's leader was paused between its fence check and its write of step 3; term 4 had
    # already recorded step 2 and goes on to record step 3
    late = dict(step(3, 3), ids=[9, 9, 9, 9])
    path = write(tmp_path / "ledger.jsonl", [step(1, 3), step(2, 4), late, step(3, 4)])
    report = verify(path)
    assert report.ok, report.problem
    assert (report.steps, report.ignored_stale) == (3, 1)
    # after term 4 recorded step 3: its step 3, a rewind and a step of its own, all ignored
    write(path, [step(1, 4), step(2, 4), step(3, 4), step(3, 3), {"kind": "rewind", "step": 1, "term": 3},
                 step(2, 3)])
    report = verify(path)
    assert report.ok, report.problem
    assert (report.steps, report.ignored_stale) == (3, 3)
    # the newest term's own records obey every rule: the same step twice in one term is a split brain
    write(path, [step(1, 4), step(2, 4), step(2, 4)])
    assert verify(path).problem.startswith("line 3: step 2 follows step 2")


def test_a_stale_record_must_still_be_well_formed(tmp_path: Path) -> None:
    path = write(tmp_path / "ledger.jsonl", [step(1, 4), {"kind": "step", "step": 2, "term": 3}])
    assert verify(path).problem.startswith("line 2: expected")
    write(path, [step(1, 4), dict(step(2), term=-1)])
    assert verify(path).problem.startswith("line 2: expected")


def test_skipped_samples_consume_their_positions_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    sampler = Sampler(N, SEED)
    with SampleLedger(path) as ledger:
        for n in (1, 2):
            ledger.record(n, sampler.position, sampler.peek(BATCH), term=1)
            sampler.advance(BATCH)
        # step 3's first batch is dropped (say its loss was not finite); step 3 trains on the next
        ledger.skip(3, sampler.position, sampler.peek(BATCH), "loss not finite", term=1)
        sampler.advance(BATCH)
        ledger.record(3, sampler.position, sampler.peek(BATCH), term=1)
    report = verify(path)
    assert report.ok, report.problem
    assert (report.steps, report.samples, report.skips, report.skipped_samples) == (3, 12, 1, 4)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[2] == {"kind": "skip", "step": 3, "start": 8, "ids": Sampler(N, SEED).ids_at(8, BATCH),
                          "reason": "loss not finite", "term": 1}


def test_skip_records_obey_the_stream_and_the_rewinds(tmp_path: Path) -> None:
    skip3 = {**step(3, 1), "kind": "skip", "reason": "r"}
    path = write(tmp_path / "ledger.jsonl", [step(1, 1), step(2, 1), skip3, step(3, 1)])
    # step 3 trained on the skipped positions again
    assert verify(path).problem == "line 4 (step 3): starts at position 8, expected 12: positions 8..11 consumed twice"
    # a rewind takes the skip back with the step it was pending for
    write(path, [step(1, 1), step(2, 1), skip3, {"kind": "rewind", "step": 2, "term": 1}, step(3, 1)])
    report = verify(path)
    assert report.ok and (report.steps, report.skips) == (3, 0), report
    # a skip belongs to the pending step, never to a later one, and always says why
    write(path, [step(1, 1), {**skip3, "step": 4}])
    assert verify(path).problem.startswith("line 2: skip at step 4, but step 1 is the last committed")
    write(path, [step(1, 1), step(2, 1), {**skip3, "reason": ""}])
    assert verify(path).problem.startswith("line 3: expected")
    with pytest.raises(ValueError, match="reason"):
        SampleLedger(tmp_path / "x.jsonl").skip(1, 0, [1], "")
    # a newer term supersedes an older term's skip when it records those positions again ...
    write(path, [step(1, 1), step(2, 1), skip3, step(3, 2, start=8)])
    report = verify(path)
    assert report.ok and (report.steps, report.skips) == (3, 0), report
    # ... and keeps it when it goes on after them: those positions were consumed by the skip
    write(path, [step(1, 1), step(2, 1), skip3, step(3, 2, start=12)])
    report = verify(path)
    assert report.ok and (report.steps, report.skips, report.skipped_samples) == (3, 1, 4), report


def test_the_term_at_a_step_names_who_recorded_it(tmp_path: Path) -> None:
    path = write(tmp_path / "ledger.jsonl", [step(1, 3), step(2, 3), step(3, 3), step(3, 5), step(4, 5),
                                             step(5, 4)])
    ledger = SampleLedger(path)
    term_at = ledger.terms()
    assert [term_at(n) for n in range(0, 7)] == [0, 3, 3, 5, 5, 5, 5]
    assert ledger.newest_term() == 5
    assert SampleLedger(tmp_path / "none.jsonl").newest_term() == 0
