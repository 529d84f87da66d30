"""Work sized to each replica's measured speed, and stragglers (issue #15, item 3; diloco and streaming).

Under diloco and streaming a round is long and every member's pseudo-gradient is weighted by the
tokens it trained, so shares need not be even: the leader sizes each sharer's share of a round to
its measured speed, so that all finish their inner steps together, instead of a group running at
its slowest member's pace. (Under ddp shares stay even: a step's sum order must not depend on
timing, or a redone step would not be bit-identical.)

- Speed: each vote carries the seconds its member computed (``Vote.compute_s``); with the tokens
  it trained, a round whose share was computed whole (nothing reused) gives a measurement. A
  member's speed is the median of its last ``WINDOW`` measurements (``SpeedLog``).
- ``sized_shares``: contiguous shares in rank order, sizes proportional to speed by the largest
  remainder (ties to the lower rank), every sharer at least one sample when the batch allows (taken
  from the largest share); a
  sharer not measured yet counts at the median of those measured (all even before any is).
- ``stable_shares``: under speculation the leader resizes the current shares at their ends only
  (a member speculates on its current share; its first inner batches then stay its).
- Stragglers: a member measured under ``STRAGGLER_RATIO`` of the median speed of the quorum's
  members for ``Timing.straggler_s`` (a minute) is reported once (``straggler`` event, docs/events.md),
  again only after it recovered. The leader's clock drives it: a test moves a fake one.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping, Sequence

from .protocol import Vote
from .shares import Shares

WINDOW = 3  # measurements a member's speed is the median of (one outlier ignored, a change followed in two rounds)
STRAGGLER_RATIO = 0.1  # under this fraction of the median speed for Timing.straggler_s: a straggler


def sized_shares(sharers: Sequence[int], batch: int, speeds: Mapping[int, float]) -> Shares:
    """Positions ``0 .. batch-1`` in contiguous runs, in ``sharers`` order, sized by speed (module
    docstring)."""
    measured = {r: speeds[r] for r in sharers if r in speeds and speeds[r] > 0}
    fill = statistics.median(measured.values()) if measured else 1.0
    weight = [measured.get(r, fill) for r in sharers]
    raw = [batch * w / sum(weight) for w in weight]
    sizes = [int(x) for x in raw]
    by_remainder = sorted(range(len(sharers)), key=lambda i: (-(raw[i] - int(raw[i])), i))
    for i in by_remainder[:batch - sum(sizes)]:
        sizes[i] += 1
    for i in range(len(sizes)):  # one sample at least, from the largest share, while the batch allows
        if sizes[i] == 0 and batch >= len(sizes):
            sizes[i], sizes[max(range(len(sizes)), key=lambda k: sizes[k])] = 1, max(sizes) - 1
    out, start = {}, 0
    for r, n in zip(sharers, sizes, strict=True):
        out[r] = tuple(range(start, start + n))
        start += n
    return out


def stable_shares(sized: Shares, current: Shares | None) -> Shares:
    """``sized``'s sizes with each member's share growing or shrinking at its end only: a member
    keeps the first positions of its ``current`` share (up to its new size), and the positions the
    shrinking members gave up go, in rank order, to the end of the growing members' shares. A
    member speculating on its current share (``replicas.outer.speculate``) then finds its first
    inner batches unchanged. ``sized`` itself when ``current`` partitions another batch or another
    set of members. The shares need not be contiguous (``salvage_shares``' are not either)."""
    if not current or list(current) != list(sized) or \
            sorted(p for v in current.values() for p in v) != sorted(p for v in sized.values() for p in v):
        return sized
    sizes = {r: len(v) for r, v in sized.items()}
    out = {r: list(current[r][:sizes[r]]) for r in sized}
    freed = [p for r in sized for p in current[r][sizes[r]:]]
    for r in sized:
        need = sizes[r] - len(out[r])
        out[r] += freed[:need]
        freed = freed[need:]
    return {r: tuple(v) for r, v in out.items()}


class SpeedLog:
    """The leader's measured speeds of its members (tokens/s) and its straggler watch."""

    def __init__(self, straggler_s: float):
        self.straggler_s = straggler_s
        self.samples: dict[int, deque[float]] = {}
        self.slow_since: dict[int, float] = {}
        self.reported: set[int] = set()

    def observe(self, votes: Mapping[int, Vote]) -> None:
        """Take the measurements of a committed step's votes."""
        for r, v in votes.items():
            if v.compute_s and v.tokens and not v.reused:
                self.samples.setdefault(r, deque(maxlen=WINDOW)).append(v.tokens / v.compute_s)

    def speeds(self) -> dict[int, float]:
        return {r: statistics.median(s) for r, s in self.samples.items() if s}

    def stragglers(self, members: Sequence[int], now: float) -> list[tuple[int, float, float, float]]:
        """Members newly found straggling at ``now``: (replica, its speed, the median, for how long)."""
        speeds = {r: s for r, s in self.speeds().items() if r in members}
        if len(speeds) < 2:
            return []
        median = statistics.median(speeds.values())
        out = []
        for r, s in sorted(speeds.items()):
            if s >= STRAGGLER_RATIO * median:
                self.slow_since.pop(r, None)
                self.reported.discard(r)
                continue
            since = self.slow_since.setdefault(r, now)
            if now - since >= self.straggler_s and r not in self.reported:
                self.reported.add(r)
                out.append((r, s, median, now - since))
        return out

    def forget(self, replica: int) -> None:
        """A member lost: its next process is measured afresh."""
        self.samples.pop(replica, None)
        self.slow_since.pop(replica, None)
        self.reported.discard(replica)
