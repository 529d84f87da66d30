"""The sample ledger: an append-only record that proves every training sample was consumed once.

File format (JSON Lines, one record per line, each written by a single ``write`` call):

    {"kind": "step", "step": 7, "start": 96, "ids": [812, 5, ...]}   step 7 committed, consuming
                                                                      stream positions 96..96+len-1
    {"kind": "rewind", "step": 4}                                     the run resumed from the
                                                                      checkpoint of step 4

Contract with the trainer (one writing process per ledger, the one that owns the sampler):
- ``record(step, start_position, ids)`` after step ``step`` COMMITTED, with the sampler's position
  before the step and the ids it consumed; never for a step that failed and will be retried.
- ``rewind(step)`` when a run resumes from a checkpoint taken after ``step``: records for later
  steps no longer count (their updates were lost with the crash), and the next record is
  ``step + 1`` again.

``verify`` replays the file honoring rewinds and checks that the surviving records: have steps
1, 2, 3, ...; cover stream positions 0, 1, 2, ... with no gap and no overlap; hold exactly the ids
the sampler (seed, num_samples) puts at those positions; and never repeat an id within an epoch.
Together: every sample the committed steps trained on was drawn exactly once per epoch.

A crash can cut the last line short. ``verify`` ignores such a line (reporting it); a new
``SampleLedger`` that opens the file to append first cuts it off, so records stay one per line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .sampler import Sampler


@dataclass(frozen=True, slots=True)
class LedgerReport:
    """What ``verify`` found."""

    ok: bool
    steps: int  # committed steps that count after rewinds
    samples: int  # samples those steps consumed
    problem: str | None  # the first problem found, naming its line; None when ok
    truncated_tail: bool  # the last line was cut short by a crash and was ignored


@dataclass(frozen=True, slots=True)
class _Entry:
    line: int
    step: int
    start: int
    ids: list[int]


class LedgerProblem(Exception):
    """Internal: stops the replay at the first problem."""


class SampleLedger:
    """Append-only ledger at ``path``. ``fsync=True`` makes each record durable before
    ``record``/``rewind`` returns (slower; without it a record survives a process crash but
    maybe not a power loss)."""

    def __init__(self, path: str | Path, *, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        self._fd: int | None = None

    def record(self, step: int, start_position: int, ids: Sequence[int]) -> None:
        """Step ``step`` committed, consuming stream positions ``start_position ..`` with ``ids``."""
        if step < 1 or start_position < 0:
            raise ValueError(f"record needs step >= 1 and start_position >= 0, got {step}, {start_position}")
        self._append({"kind": "step", "step": int(step), "start": int(start_position),
                      "ids": [int(i) for i in ids]})

    def rewind(self, step: int) -> None:
        """The run resumed from the checkpoint of ``step`` (0: from scratch)."""
        if step < 0:
            raise ValueError(f"rewind needs step >= 0, got {step}")
        self._append({"kind": "rewind", "step": int(step)})

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

    def verify(self, sampler_seed: int, num_samples: int) -> LedgerReport:
        """Replay the ledger against ``Sampler(num_samples, sampler_seed)``; see the module docstring."""
        if not self.path.is_file():
            return LedgerReport(ok=False, steps=0, samples=0, truncated_tail=False,
                                problem=f"no ledger file at {self.path}")
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        truncated_tail = lines[-1] != b""  # a complete file ends with a newline
        entries: list[_Entry] = []
        try:
            for number, raw in enumerate(lines[:-1], start=1):
                _replay(entries, number, raw)
            _check_stream(entries, Sampler(num_samples, sampler_seed))
        except LedgerProblem as e:
            return LedgerReport(ok=False, steps=len(entries), samples=sum(len(e.ids) for e in entries),
                                problem=str(e), truncated_tail=truncated_tail)
        return LedgerReport(ok=True, steps=len(entries), samples=sum(len(e.ids) for e in entries),
                            problem=None, truncated_tail=truncated_tail)


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


def _replay(entries: list[_Entry], number: int, raw: bytes) -> None:
    """Apply one line to the surviving records ``entries``."""
    try:
        record = json.loads(raw)
    except ValueError:
        raise LedgerProblem(f"line {number}: not a JSON record: {raw[:80]!r}") from None
    kind = record.get("kind") if isinstance(record, dict) else None
    last = entries[-1].step if entries else 0
    if kind == "rewind" and _is_count(record.get("step")):
        if record["step"] > last:
            raise LedgerProblem(f"line {number}: rewind to step {record['step']}, but the ledger only "
                                f"holds steps up to {last}: committed steps were not recorded")
        del entries[record["step"]:]  # entries[i] is step i + 1
    elif (kind == "step" and _is_count(record.get("step")) and _is_count(record.get("start"))
          and isinstance(record.get("ids"), list) and all(_is_count(i) for i in record["ids"])):
        if record["step"] != last + 1:
            raise LedgerProblem(f"line {number}: step {record['step']} follows step {last}; steps must "
                                "run 1, 2, 3, ... (only a rewind may go back)")
        entries.append(_Entry(number, record["step"], record["start"], record["ids"]))
    else:
        raise LedgerProblem(f"line {number}: expected {{'kind': 'step', 'step', 'start', 'ids'}} or "
                            f"{{'kind': 'rewind', 'step'}}, got {raw[:80]!r}")


def _check_stream(entries: list[_Entry], sampler: Sampler) -> None:
    """Positions gapless from 0, no id twice in an epoch, ids equal to the sampler's stream."""
    position = 0
    epoch, seen = 0, {}  # seen: id -> position, within the current epoch
    for entry in entries:
        where = f"line {entry.line} (step {entry.step})"
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
