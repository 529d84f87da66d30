"""``tenacia report --check``: whether a run proves itself, from its files alone.

Two facts, each printed, and the exit status says whether both hold (0 yes, 1 no, 2 the run
directory cannot be checked):

- **Exactly once.** The sample ledger (``ledger.jsonl``, ``tenacia.data.ledger``) replays to
  committed steps 1, 2, 3, ... that consumed every sample of the sampler's stream once, in order.
  The samples that records deliberately skipped (with a reason) and the records of a deposed
  leader's term that the replay ignored are printed beside the committed steps.
  The sampler is the one the run used: its seed and number of training samples are recorded in
  the run's ``run_started`` events (``sampler_seed``, ``samples``). A run directory written
  before they were recorded cannot be checked and says so.
- **One model.** Every replica that reported its state at the final committed step
  (``state_fingerprint`` events: model, optimizer, sampler and step hashed) reports the same
  fingerprint. A single-process run has one fingerprint and nothing to disagree with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.ledger import LedgerReport, SampleLedger
from ..storage import read_jsonl


@dataclass(frozen=True, slots=True)
class RunCheck:
    ledger: LedgerReport | None  # None when it could not be checked (``unchecked`` says why)
    final_step: int | None  # the last step with state fingerprints
    fingerprints: dict[int, str] = field(default_factory=dict)  # replica -> fingerprint at final_step
    unchecked: str | None = None

    @property
    def ok(self) -> bool:
        return (self.unchecked is None and self.ledger is not None and self.ledger.ok
                and len(set(self.fingerprints.values())) <= 1)

    def lines(self) -> list[str]:
        """What ``--check`` prints, one line per fact."""
        if self.unchecked:
            return [f"cannot check: {self.unchecked}"]
        lg = self.ledger
        out = [f"sample ledger: {'ok' if lg.ok else 'FAILED'}: {lg.steps} committed steps, {lg.samples} samples, "
               f"{lg.skipped_samples} skipped, {lg.ignored_stale} stale record(s) ignored"
               + ("" if lg.ok else f": {lg.problem}") + (" (a last line cut short by a crash was ignored)"
                                                          if lg.truncated_tail else "")]
        if not self.fingerprints:
            out.append("final state: no replica reported a state fingerprint")
        else:
            distinct = set(self.fingerprints.values())
            verdict = "equal" if len(distinct) == 1 else f"DIFFER ({len(distinct)} distinct)"
            out.append(f"final state at step {self.final_step}: {len(self.fingerprints)} fingerprint(s) {verdict}")
            out += [f"  replica {r}: {fp}" for r, fp in sorted(self.fingerprints.items())]
        return out


def check(run_dir: str | Path) -> RunCheck:
    run_dir = Path(run_dir)
    events, _ = read_jsonl(run_dir / "events.jsonl")
    started = [e for e in events if e.get("event") == "run_started" and "samples" in e and "sampler_seed" in e]
    if not started:
        return RunCheck(None, None, unchecked=f"{run_dir / 'events.jsonl'} records no sampler (samples, sampler_seed "
                                              "in run_started): a run written before tenacia recorded them")
    if not (run_dir / "ledger.jsonl").exists():
        return RunCheck(None, None, unchecked=f"{run_dir / 'ledger.jsonl'} does not exist")
    seeds = {(e["sampler_seed"], e["samples"]) for e in started}
    if len(seeds) > 1:
        return RunCheck(None, None, unchecked=f"the run's processes recorded different samplers: {sorted(seeds)}")
    seed, samples = seeds.pop()
    report = SampleLedger(run_dir / "ledger.jsonl").verify(int(seed), int(samples))
    prints = [e for e in events if e.get("event") == "state_fingerprint"]
    final = max((e["step"] for e in prints), default=None)
    fingerprints = {int(e.get("replica", 0)): e["fingerprint"] for e in prints if e["step"] == final}
    return RunCheck(report, final, fingerprints)
