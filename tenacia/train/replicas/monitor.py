"""What the launcher shows while replicas train: a progress bar fed by the event log, and one line
per fault, detection, quorum change and recovery."""

from __future__ import annotations

from pathlib import Path

from ...events import EventTail
from ..progress import Progress

NOTABLE = {
    "fault_injected": lambda e: f"chaos: {e['kind']} replica {e['replica']} at step {e['step']}",
    "failure_detected": lambda e: f"detected {e['kind']} of replica {e['replica']} ({e['reason']})",
    "quorum_changed": lambda e: f"quorum {e['quorum_id']}: replicas {e['members']} from step {e['step'] + 1}"
    + (f", healing {e['healing']}" if e.get("healing") else ""),
    "heal_done": lambda e: f"replica {e['replica']} healed from replica {e['peer']} in {e['heal_s']:.2f}s "
    f"({e['bytes'] / 1e6:.1f} MB)",
    "coordinator_changed": lambda e: f"replica {e['coordinator']} leads (term {e['term']})"
    + (f", took over in {e['takeover_s']:.3f}s" if e.get("takeover_s") is not None else ""),
    "replica_restarted": lambda e: f"launcher restarted replica {e['replica']} (restart #{e['attempt']})",
    "resumed": lambda e: f"the job resumed from its disk checkpoint at step {e['step']}",
    "checkpoint_failed": lambda e: f"checkpoint FAILED ({e['source']}): {e['error']}; training goes on",
    "replica_checkpoint_loaded": lambda e: f"{e['source']} starts from the disk checkpoint of step {e['step']}",
}


class RunMonitor:
    def __init__(self, run_dir: Path, total_steps: int, tokens_per_step: int, enabled: bool = True,
                 every: int = 10):
        self.tail = EventTail(run_dir / "events.jsonl", from_end=True)
        self.tokens_per_step = tokens_per_step
        self.progress = Progress(total=total_steps, enabled=enabled, label="replicas", every=every)
        self.enabled = enabled
        self._window: list[tuple[float, int]] = []

    def __enter__(self) -> RunMonitor:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def tick(self) -> None:
        for e in self.tail.new():
            kind = e.get("event")
            if kind == "step_committed" and e.get("loss") is not None:
                self._window = [*self._window[-20:], (e["t"], e["step"])]
                (t0, s0), (t1, s1) = self._window[0], self._window[-1]
                tps = (s1 - s0) * self.tokens_per_step / (t1 - t0) if t1 > t0 else 0.0
                self.progress.update(e["step"], loss=e["loss"], tokens_per_s=tps)
            elif kind in NOTABLE and self.enabled:
                self.progress.log(NOTABLE[kind](e))
