"""The sample ledger: an append-only record that proves every training sample was consumed once.

File format (JSON Lines, one record per line, each written by a single ``write`` call). The
record kinds, defined here and in docs/events.md ("The sample ledger") and nowhere else:

    {"kind": "step", "step": 7, "start": 96, "ids": [812, 5, ...], "term": 3}
        committed: step 7 was applied, training on the samples at stream positions 96..96+len-1
    {"kind": "skip", "step": 7, "start": 96, "ids": [812, ...], "reason": "...", "term": 3}
        skipped: the samples at those positions were drawn while step 7 was pending and
        deliberately not trained on (``reason`` says why); step 7 is still to come, on later
        positions. They consume their positions exactly like a committed step's.
    {"kind": "rewind", "step": 4, "term": 3}
        the run resumed from the checkpoint of step 4: later records no longer count

``term`` is the leader term that wrote the record (``tenacia.train.replicas.lease``). A
single-process run writes the newest term its ledger already holds: 0 unless a replica run wrote
the ledger before. A record without ``term`` (written before records carried it) reads as term 0.

Contract with the writer (one writing process per term, the one that owns the sampler):
- ``record(step, start_position, ids)`` after step ``step`` COMMITTED, with the sampler's position
  before the step and the ids it consumed; never for a step that failed and will be retried.
- ``skip(step, start_position, ids, reason)`` when the samples the sampler put at those positions
  will never be trained on, while step ``step`` is pending; the sampler moves past them.
- ``rewind(step)`` when a run resumes from a checkpoint taken after ``step``: records for later
  steps no longer count (their updates were lost with the crash), and the next record is
  ``step + 1`` again.

Terms, the fence on paper: terms are claimed in increasing order, so once a record of term T is in
the file, a leader of an older term is deposed, and a record of it that comes later was written by
a leader paused between its fence check and its write. Replaying the file:
- a record of a term older than the newest term read so far is stale: it is ignored (counted in
  ``ignored_stale``), whatever step it names;
- the first record of a newer term supersedes what older terms recorded from its stream position
  on (a deposed leader may have recorded a step, or skipped samples, that the new leader records
  again): before a ``step`` or ``skip`` record starting at position P, the records that start at
  or after P no longer count;
- records of the same term follow the rules below, as they always did.

``verify`` replays the file and checks that the surviving records: commit steps 1, 2, 3, ...;
cover stream positions 0, 1, 2, ... with no gap and no overlap (committed and skipped together);
hold exactly the ids the sampler (seed, num_samples) puts at those positions; and never repeat an
id within an epoch. Together: every sample was drawn exactly once per epoch, and trained on by
the committed steps unless a skip record says why not.

A crash can cut the last line short. ``verify`` ignores such a line (reporting it); a new
``SampleLedger`` that opens the file to append first cuts it off, so records stay one per line.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .sampler import Sampler

KINDS = ("step", "skip", "rewind")


@dataclass(frozen=True, slots=True)
class LedgerReport:
    """What ``verify`` found."""

    ok: bool
    steps: int  # committed steps that count after rewinds
    samples: int  # samples those steps trained on
    problem: str | None  # the first problem found, naming its line; None when ok
    truncated_tail: bool  # the last line was cut short by a crash and was ignored
    skips: int = 0  # skip records that count
    skipped_samples: int = 0  # samples they deliberately left untrained
    ignored_stale: int = 0  # records of a deposed leader's term, ignored


@dataclass(frozen=True, slots=True)
class _Entry:
    line: int
    kind: str  # "step" or "skip"
    step: int
    start: int
    ids: list[int]
    term: int


@dataclass(slots=True)
class _Replay:
    """The records that count so far, in file order (steps never decrease along it)."""

    entries: list[_Entry] = field(default_factory=list)
    newest: int = 0  # the newest term read so far
    stale: int = 0

    @property
    def last(self) -> int:
        """The last committed step (a skip record belongs to the step after it)."""
        if not self.entries:
            return 0
        e = self.entries[-1]
        return e.step if e.kind == "step" else e.step - 1

    def rewind(self, step: int) -> None:
        while self.entries and self.entries[-1].step > step:
            self.entries.pop()

    def supersede(self, start: int) -> None:
        """What a deposed leader recorded from stream position ``start`` on no longer counts."""
        while self.entries and self.entries[-1].start >= start:
            self.entries.pop()

    def count(self, kind: str) -> tuple[int, int]:
        """(records, samples) of ``kind`` that count."""
        chosen = [e for e in self.entries if e.kind == kind]
        return len(chosen), sum(len(e.ids) for e in chosen)


class LedgerProblem(Exception):
    """Internal: stops the replay at the first problem."""


class SampleLedger:
    """Append-only ledger at ``path``. ``fsync=True`` makes each record durable before
    ``record``/``skip``/``rewind`` returns (slower; without it a record survives a process crash
    but maybe not a power loss)."""

    def __init__(self, path: str | Path, *, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        self._fd: int | None = None

    def record(self, step: int, start_position: int, ids: Sequence[int], *, term: int = 0) -> None:
        """Step ``step`` committed, consuming stream positions ``start_position ..`` with ``ids``."""
        _check_positions("record", step, start_position, term)
        self._append({"kind": "step", "step": int(step), "start": int(start_position),
                      "ids": [int(i) for i in ids], "term": int(term)})

    def skip(self, step: int, start_position: int, ids: Sequence[int], reason: str, *, term: int = 0) -> None:
        """While step ``step`` is pending, the samples ``ids`` at positions ``start_position ..``
        were drawn and will never be trained on, because of ``reason``."""
        _check_positions("skip", step, start_position, term)
        if not isinstance(reason, str) or not reason:
            raise ValueError(f"skip needs a non-empty reason, got {reason!r}")
        self._append({"kind": "skip", "step": int(step), "start": int(start_position),
                      "ids": [int(i) for i in ids], "reason": reason, "term": int(term)})

    def rewind(self, step: int, *, term: int = 0) -> None:
        """The run resumed from the checkpoint of ``step`` (0: from scratch)."""
        if step < 0 or term < 0:
            raise ValueError(f"rewind needs step >= 0 and term >= 0, got {step}, {term}")
        self._append({"kind": "rewind", "step": int(step), "term": int(term)})

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SampleLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _append(self, record: dict) -> None:
        if self._fd is None:
            self._fd = self._open()
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        written = os.write(self._fd, line)  # O_APPEND: one write, one whole line at the end
        if written != len(line):
            raise OSError(f"sample ledger {self.path}: short write ({written} of {len(line)} bytes)")
        if self.fsync:
            os.fsync(self._fd)

    def _open(self) -> int:
        """Open to append, first cutting off a last line a crash left unfinished."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.ftruncate(fd, _end_of_last_line(fd, size))
        return fd

    def _replay(self) -> tuple[_Replay, str | None, bool]:
        """Replay every whole line: (what counts, the first problem or None, truncated tail)."""
        replay = _Replay()
        lines = self.path.read_bytes().split(b"\n") if self.path.is_file() else [b""]
        try:
            for number, raw in enumerate(lines[:-1], start=1):
                _apply(replay, number, raw)
        except LedgerProblem as e:
            return replay, str(e), lines[-1] != b""
        return replay, None, lines[-1] != b""  # a complete file ends with a newline

    def newest_term(self) -> int:
        """The newest term any record of the file names (0 for none, or no file)."""
        replay, _, _ = self._replay()
        return replay.newest

    def terms(self) -> Callable[[int], int]:
        """``term_at(step)``: the term of the newest record that counts at or before ``step`` (0
        when none); a checkpoint of ``step`` saved under an older term was saved by a deposed
        leader. The file is replayed once, now; a problem in it ends the replay there."""
        replay, _, _ = self._replay()
        steps = [e.step for e in replay.entries]  # along what counts, steps and terms never decrease
        terms = [e.term for e in replay.entries]

        def term_at(step: int) -> int:
            i = bisect_right(steps, step)
            return terms[i - 1] if i else 0

        return term_at

    def verify(self, sampler_seed: int, num_samples: int) -> LedgerReport:
        """Replay the ledger against ``Sampler(num_samples, sampler_seed)``; see the module docstring."""
        if not self.path.is_file():
            return LedgerReport(ok=False, steps=0, samples=0, truncated_tail=False,
                                problem=f"no ledger file at {self.path}")
        replay, problem, truncated_tail = self._replay()
        if problem is None:
            try:
                _check_stream(replay.entries, Sampler(num_samples, sampler_seed))
            except LedgerProblem as e:
                problem = str(e)
        (steps, samples), (skips, skipped) = replay.count("step"), replay.count("skip")
        return LedgerReport(ok=problem is None, steps=steps, samples=samples, problem=problem,
                            truncated_tail=truncated_tail, skips=skips, skipped_samples=skipped,
                            ignored_stale=replay.stale)


def _check_positions(what: str, step: int, start_position: int, term: int) -> None:
    if step < 1 or start_position < 0 or term < 0:
        raise ValueError(f"{what} needs step >= 1, start_position >= 0 and term >= 0, "
                         f"got {step}, {start_position}, {term}")


def _end_of_last_line(fd: int, size: int) -> int:
    """Offset just past the last newline of the file (0 if none), scanning back in chunks."""
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _well_formed(record: object) -> bool:
    if not isinstance(record, dict) or record.get("kind") not in KINDS or not _is_count(record.get("step")):
        return False
    if not _is_count(record.get("term", 0)):
        return False
    if record["kind"] == "rewind":
        return True
    if record["kind"] == "skip" and not (isinstance(record.get("reason"), str) and record["reason"]):
        return False
    return (_is_count(record.get("start")) and isinstance(record.get("ids"), list)
            and all(_is_count(i) for i in record["ids"]))


def _apply(replay: _Replay, number: int, raw: bytes) -> None:
    """Apply one line to what counts (see "Terms" in the module docstring)."""
    try:
        record = json.loads(raw)
    except ValueError:
        raise LedgerProblem(f"line {number}: not a JSON record: {raw[:80]!r}") from None
    if not _well_formed(record):
        raise LedgerProblem(f"line {number}: expected {{'kind': 'step', 'step', 'start', 'ids'}}, "
                            f"{{'kind': 'skip', 'step', 'start', 'ids', 'reason'}} or "
                            f"{{'kind': 'rewind', 'step'}}, each with an optional 'term', got {raw[:80]!r}")
    kind, step, term = record["kind"], record["step"], record.get("term", 0)
    if term < replay.newest:
        replay.stale += 1  # a deposed leader's late write
        return
    newer, replay.newest = term > replay.newest, term
    if kind == "rewind":
        if step > replay.last:
            raise LedgerProblem(f"line {number}: rewind to step {step}, but the ledger only "
                                f"holds steps up to {replay.last}: committed steps were not recorded")
        replay.rewind(step)
        return
    if newer:
        replay.supersede(record["start"])
    if step != replay.last + 1:
        if kind == "step":
            raise LedgerProblem(f"line {number}: step {step} follows step {replay.last}; steps must "
                                "run 1, 2, 3, ... (only a rewind may go back)")
        raise LedgerProblem(f"line {number}: skip at step {step}, but step {replay.last} is the last "
                            f"committed: samples are skipped while step {replay.last + 1} is pending")
    replay.entries.append(_Entry(number, kind, step, record["start"], record["ids"], term))


def _check_stream(entries: list[_Entry], sampler: Sampler) -> None:
    """Positions gapless from 0, no id twice in an epoch, ids equal to the sampler's stream."""
    position = 0
    epoch, seen = 0, {}  # seen: id -> position, within the current epoch
    for entry in entries:
        where = f"line {entry.line} ({'step' if entry.kind == 'step' else 'skip at step'} {entry.step})"
        if entry.start != position:
            what = "skipped" if entry.start > position else "consumed twice"
            low, high = sorted((entry.start, position))
            raise LedgerProblem(f"{where}: starts at position {entry.start}, expected {position}: "
                                f"positions {low}..{high - 1} {what}")
        expected = sampler.ids_at(entry.start, len(entry.ids))
        for offset, (sample_id, want) in enumerate(zip(entry.ids, expected, strict=True)):
            p = entry.start + offset
            if p // sampler.num_samples != epoch:
                epoch, seen = p // sampler.num_samples, {}
            if sample_id in seen:
                raise LedgerProblem(f"{where}: sample {sample_id} at position {p} was already consumed "
                                    f"at position {seen[sample_id]} in epoch {epoch}")
            seen[sample_id] = p
            if sample_id != want:
                raise LedgerProblem(f"{where}: position {p} holds sample {sample_id}, but the sampler "
                                    f"(seed={sampler.seed}, num_samples={sampler.num_samples}) puts "
                                    f"sample {want} there")
        position += len(entry.ids)
