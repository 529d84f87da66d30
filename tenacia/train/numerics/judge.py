"""The leader's numeric judgement of a step: triggers, re-executions, verdicts, strikes. Pure.

Contract (issue #14; ``docs/fault-model.md``, "Wrong numbers"):
- Every member's vote carries a ``Report`` (``member.py`` measures it): its local loss and
  gradient norm and the fingerprint of its contribution (sharers), the reduced gradients' norm
  and fingerprint, the fingerprint of its whole state (weights and moments) at the vote, whether
  that state still equals the one it committed (``rest_ok``), and an audit when it recomputed a
  peer's share.
- **Direct verdicts** need no re-execution. A member whose state changed since its own commit, or
  whose state or reduced gradients differ from the strict majority's, holds corrupt numbers: the
  step is discarded, that member heals from a peer and takes a strike. Without a strict majority
  (two replicas that disagree) the step is discarded and nobody is blamed.
- **Triggers** only start a re-execution: a non-finite loss or norm; a local gradient norm far
  above the other sharers' (median/MAD, ``stats.outliers``); the step's loss or reduced norm far
  above its baseline over time (``stats.Ema``); an audit whose recomputation differs.
- **Attribution** compares outcomes bit for bit (``Outcome``: gradient fingerprint, loss, norm):
  the suspect's re-execution differs from its vote: a transient fault, the step is redone; it
  reproduces and a healthy peer's re-execution of the same share differs: the suspect is faulty
  (a strike; it computes no share in the redo, and is audited every step for a while); the peer
  agrees: the numbers are right. Then a spike or non-finite value is the model's or the data's
  (the batch is skipped, its samples recorded as skipped, nobody evicted), and an audit that
  disagreed was the auditor's error: the auditor re-executes its audit once more (a second round,
  the peer's result already known); not reproduced, a transient error, and the step commits (two
  devices computed its numbers alike); reproduced, the auditor is faulty (a strike, it sits out
  the redo: its own share is as suspect as its audit).
- **Eviction**: ``strikes_to_evict`` strikes within ``strike_window_steps`` evict the replica. So
  do ``transients_to_evict`` transient faults of one replica (its own or as an auditor) within the
  window: an intermittent fault (a chip wrong now and then, or wrong only in what it sends) seldom
  reproduces in a re-execution, and would otherwise cost a redo for ever (verdict
  ``intermittent``). A new leader takes strikes and transients from the event log (``restore``).
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import NumericsConfig
from .stats import Ema, outliers

WATCH_STEPS = 16  # a struck or suspect replica is audited on every step for this many steps


def _bits(x: float | None) -> bytes:
    return b"" if x is None else struct.pack("<d", x)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one computation of a share gave: compared bit for bit (NaN equals NaN here)."""

    grad: str
    loss: float
    gnorm: float

    def same(self, other: Outcome) -> bool:
        return (self.grad, _bits(self.loss), _bits(self.gnorm)) == (other.grad, _bits(other.loss), _bits(other.gnorm))

    @staticmethod
    def of(d: Mapping[str, Any]) -> Outcome:
        return Outcome(str(d["grad"]), float(d["loss"]), float(d["gnorm"]))


@dataclass(frozen=True, slots=True)
class Report:
    """One member's numeric vote (``member.measure``); ``own`` is None for a member with no share."""

    own: Outcome | None
    rnorm: float
    reduced: str
    state: str
    rest_ok: bool
    chunks: tuple[tuple[int, ...], ...] = ()
    audits: tuple[tuple[int, Outcome], ...] = ()  # (a replica whose share it recomputed, the outcome)

    @staticmethod
    def of(d: Mapping[str, Any]) -> Report:
        return Report(own=Outcome.of(d["own"]) if d.get("own") else None, rnorm=float(d["rnorm"]),
                      reduced=str(d["reduced"]), state=str(d["state"]), rest_ok=bool(d["rest_ok"]),
                      chunks=tuple(tuple(c) for c in d.get("chunks", ())),
                      audits=tuple((int(a["of"]), Outcome.of(a)) for a in d.get("audits", ())))


@dataclass(frozen=True, slots=True)
class Recheck:
    """A re-execution round: ``suspect`` and ``peer`` both recompute the share of ``share_of`` (the
    suspect's own, except when an auditor is the suspect); ``peer_run``: the peer's result when it
    is known already (then only the suspect is asked)."""

    suspect: int
    peer: int
    kind: str  # nonfinite, spike, audit, or auditor (the second round after an audit)
    why: str
    original: Outcome
    chunks: tuple[tuple[int, ...], ...]
    auditor: int | None = None
    seen: Outcome | None = None  # what the auditor's audit gave
    share_of: int | None = None
    peer_run: Outcome | None = None

    @property
    def of(self) -> int:
        return self.suspect if self.share_of is None else self.share_of


@dataclass(slots=True)
class Decision:
    """What the leader does with a step: ``commit``, ``discard`` (redo it), ``skip`` (drop the
    batch, record its samples as skipped) or ``recheck`` (start ``recheck``). ``heal``: members whose
    state is corrupt (they rejoin and heal); ``evict``: members evicted by name; ``bench``: members
    that compute no share when the step is redone; ``verdict``: the event's name for it."""

    action: str
    reason: str = ""
    verdict: str = ""
    suspect: int | None = None
    heal: list[int] = field(default_factory=list)
    evict: list[int] = field(default_factory=list)
    bench: list[int] = field(default_factory=list)
    strikes: dict[int, int] = field(default_factory=dict)
    recheck: Recheck | None = None


def minority(values: Mapping[int, str]) -> tuple[list[int], bool]:
    """Members whose value differs from the strict majority's, and whether a majority exists."""
    counts = Counter(values.values()).most_common()
    if len(counts) <= 1:
        return [], True
    if counts[0][1] * 2 <= len(values):
        return [], False
    top = counts[0][0]
    return sorted(r for r, v in values.items() if v != top), True


class Judge:
    """The leader's numeric state across steps: baselines, the recheck in flight, strikes, watches."""

    def __init__(self, cfg: NumericsConfig, replay: bool = True):
        """``replay``: a share can be re-executed bit for bit (ddp). Without it (diloco, streaming:
        replicas hold their own parameters and moments between commits) a trigger cannot be
        attributed: the suspect step's batch is skipped (verdict ``unattributed``), nobody struck."""
        self.cfg, self.replay = cfg, replay
        self.loss, self.norm = Ema(), Ema()
        self.round: Recheck | None = None
        self.strikes: dict[int, list[int]] = {}  # replica -> steps of its strikes
        self.transients: dict[int, list[int]] = {}  # replica -> steps of its transient faults
        self.watch: dict[int, int] = {}  # replica -> the last step it is audited on every step

    # ----- votes ------------------------------------------------------------------------------------
    def on_votes(self, step: int, reports: Mapping[int, Report], sharers: Sequence[int]) -> Decision:
        """Judge a step every member voted ok on (module docstring)."""
        self.round = None
        direct = self._direct(step, reports)
        if direct is not None:
            return direct
        suspects = self._triggers(step, reports, sharers)
        if suspects:
            suspect, kind, why, auditor, seen = suspects[0]
            if not self.replay:
                return Decision("skip", f"{why}: no re-execution under this sync strategy", "unattributed",
                                suspect=suspect)
            # a lone sharer is its own peer: it can tell a transient fault, not a chip from the model
            others = [r for r in sharers if r not in (suspect, auditor)] or [r for r in sharers if r != suspect] or [suspect]
            self.round = Recheck(suspect, others[0], kind, why, reports[suspect].own, reports[suspect].chunks, auditor,
                                 seen)
            return Decision("recheck", why, suspect=suspect, recheck=self.round)
        self._learn(reports, sharers)
        return Decision("commit")

    def _direct(self, step: int, reports: Mapping[int, Report]) -> Decision | None:
        bad: dict[int, str] = {r: "its state changed since it committed (corrupted at rest)"
                               for r, rep in reports.items() if not rep.rest_ok}
        tie = []
        for what, attr in (("state", "state"), ("reduced gradients", "reduced")):
            odd, majority = minority({r: getattr(rep, attr) for r, rep in reports.items() if r not in bad})
            for r in odd:
                bad.setdefault(r, f"its {what} fingerprint differs from the majority's")
            if not majority:
                tie.append(what)
        if bad:
            strikes = {r: self.strike(r, step) for r in bad}
            evict = [r for r, n in strikes.items() if n >= self.cfg.strikes_to_evict]
            why = "; ".join(f"replica {r}: {w}" for r, w in sorted(bad.items()))
            return Decision("discard", why, "corrupt_state", heal=[r for r in bad if r not in evict], evict=evict,
                            strikes=strikes)
        if tie:
            return Decision("discard", f"{' and '.join(tie)} fingerprints split with no majority: nobody blamed",
                            "no_majority")
        return None

    def _triggers(self, step: int, reports: Mapping[int, Report],
                  sharers: Sequence[int]) -> list[tuple[int, str, str, int | None, Outcome | None]]:
        own = {r: reports[r].own for r in sharers if reports[r].own is not None}
        out: list[tuple[int, str, str, int | None, Outcome | None]] = []
        for r, o in own.items():
            if not (math.isfinite(o.loss) and math.isfinite(o.gnorm)):
                out.append((r, "nonfinite", f"replica {r}: loss {o.loss}, gradient norm {o.gnorm}", None, None))
        if out or not own:
            return out
        worst = max(own, key=lambda r: own[r].gnorm)
        rnorm = statistics_rnorm(reports)
        if not math.isfinite(rnorm):
            return [(worst, "nonfinite", f"reduced gradient norm {rnorm}", None, None)]
        cfg = self.cfg
        for r in outliers({r: o.gnorm for r, o in own.items()}, cfg.spike_z, cfg.norm_ratio):
            out.append((r, "spike", f"replica {r}: gradient norm {own[r].gnorm:.4g} far above the other sharers'", None,
                        None))
        loss = sum(o.loss for o in own.values()) / len(own)
        if self.norm.spike(rnorm, cfg.spike_z, cfg.norm_ratio, cfg.warmup_steps):
            out.append((worst, "spike", f"gradient norm {rnorm:.4g} against a baseline of {self.norm.mean:.4g}", None,
                        None))
        elif self.loss.spike(loss, cfg.spike_z, cfg.loss_ratio, cfg.warmup_steps):
            out.append((worst, "spike", f"loss {loss:.4g} against a baseline of {self.loss.mean:.4g}", None, None))
        for auditor, rep in sorted(reports.items()):
            for target, seen in rep.audits:
                if target not in own or seen.same(own[target]):
                    continue
                out.append((target, "audit", f"replica {auditor} recomputed replica {target}'s share and got "
                                             f"other numbers", auditor, seen))
        return out

    def _learn(self, reports: Mapping[int, Report], sharers: Sequence[int]) -> None:
        own = [reports[r].own for r in sharers if reports[r].own is not None]
        if own:
            self.loss.update(sum(o.loss for o in own) / len(own))
        self.norm.update(statistics_rnorm(reports))

    # ----- re-executions ----------------------------------------------------------------------------
    def on_rechecked(self, step: int, suspect_run: Outcome, peer_run: Outcome) -> Decision:
        """The verdict once the suspect and the peer re-executed the suspect's share."""
        rc, self.round = self.round, None
        assert rc is not None, "no recheck in flight"
        if rc.kind == "auditor":
            return self._auditor_verdict(step, rc, suspect_run)
        s = rc.suspect
        self.watch[s] = step + WATCH_STEPS
        if not suspect_run.same(rc.original):
            why = f"{rc.why}: not reproduced when replica {s} re-executed it: a transient fault"
            return self._intermittent(step, s, why) or Decision("discard", why, "transient", suspect=s)
        if not peer_run.same(rc.original):
            n = self.strike(s, step)
            evict = n >= self.cfg.strikes_to_evict
            return Decision("discard", f"{rc.why}: reproduced by replica {s}, but replica {rc.peer} computed other "
                                       f"numbers from the same state: replica {s} is faulty (strike {n})",
                            "faulty", suspect=s, evict=[s] if evict else [], bench=[] if evict else [s],
                            strikes={s: n})
        if rc.kind == "audit" and rc.auditor is not None and rc.seen is not None:
            a = rc.auditor
            self.round = Recheck(a, rc.peer, "auditor", f"{rc.why}, but replica {rc.peer} reproduced replica {s}'s numbers",
                                 rc.seen, rc.chunks, share_of=s, peer_run=peer_run)
            return Decision("recheck", f"auditor {a} asked to repeat its audit", suspect=a, recheck=self.round)
        self.loss.reset(rc.original.loss)
        self.norm.reset(rc.original.gnorm)
        return Decision("skip", f"{rc.why}: reproduced by replica {s} and by replica {rc.peer}: the numbers are "
                                f"right, the model or the batch is unstable", "unstable", suspect=s)

    def _auditor_verdict(self, step: int, rc: Recheck, auditor_run: Outcome) -> Decision:
        a = rc.suspect
        if not auditor_run.same(rc.original):
            why = f"{rc.why}; auditor {a} did not reproduce its audit: a transient error of the auditor"
            return self._intermittent(step, a, why) or Decision("commit", f"{why}, the step's numbers stand",
                                                                "auditor_transient", suspect=a)
        n = self.strike(a, step)
        evict = n >= self.cfg.strikes_to_evict
        self.watch[a] = step + WATCH_STEPS
        return Decision("discard", f"{rc.why}; auditor {a} reproduced its wrong audit: replica {a} is faulty "
                                   f"(strike {n})", "faulty", suspect=a, evict=[a] if evict else [],
                        bench=[] if evict else [a], strikes={a: n})

    def _intermittent(self, step: int, replica: int, why: str) -> Decision | None:
        """Record a transient fault of ``replica``; the eviction once it had ``transients_to_evict``
        of them within the window (module docstring), else None."""
        recent = [s for s in self.transients.get(replica, []) if s > step - self.cfg.strike_window_steps]
        self.transients[replica] = [*recent, step]
        n, limit = len(self.transients[replica]), self.cfg.transients_to_evict
        if not limit or n < limit:
            return None
        return Decision("discard", f"{why}; {n} transient faults within {self.cfg.strike_window_steps} steps: "
                                   f"replica {replica} has an intermittent fault", "intermittent", suspect=replica, evict=[replica],
                        strikes={replica: len(self.strikes.get(replica, []))})

    # ----- strikes and watches ----------------------------------------------------------------------
    def strike(self, replica: int, step: int) -> int:
        """Record a strike; returns the replica's strikes within the window."""
        recent = [s for s in self.strikes.get(replica, []) if s > step - self.cfg.strike_window_steps]
        self.strikes[replica] = [*recent, step]
        return len(self.strikes[replica])

    def watched(self, step: int) -> dict[int, int]:
        """Replicas audited on every step, until which step (expired ones dropped)."""
        self.watch = {r: until for r, until in self.watch.items() if until >= step}
        return dict(self.watch)

    def restore(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Take the strikes an earlier leader gave (its ``numeric_verdict`` and ``replica_evicted``
        events, in order): a new leader does not start a lemon's count again."""
        for e in events:
            if e.get("event") == "numeric_verdict" and isinstance(e.get("step"), int):
                for r in (e.get("strikes") or {}):
                    if e.get("verdict") != "intermittent":
                        self.strikes.setdefault(int(r), []).append(e["step"])
                if e.get("verdict") in ("transient", "auditor_transient") and isinstance(e.get("suspect"), int):
                    self.transients.setdefault(e["suspect"], []).append(e["step"])
            elif e.get("event") == "replica_evicted" and isinstance(e.get("replica"), int):
                self.forget(e["replica"])

    def forget(self, replica: int) -> None:
        """An evicted replica's id may come back on another device: its strikes stay with the device."""
        self.strikes.pop(replica, None)
        self.transients.pop(replica, None)
        self.watch.pop(replica, None)


def statistics_rnorm(reports: Mapping[int, Report]) -> float:
    """The reduced gradient norm the majority of members report."""
    values = Counter(r.rnorm for r in reports.values() if math.isfinite(r.rnorm)).most_common(1)
    return values[0][0] if values else math.inf
