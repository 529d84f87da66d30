"""When a run's link changes (``[chaos]`` link entries, ``tenacia.faults.LinkChange``) take effect.

A pure timetable, driven by the caller with the newest committed step and a monotonic ``now``
(so it is tested with a fake clock): an entry at step S is due once step S is committed (step 0: at once); one at
``Ts`` once T seconds have passed since the first committed step was seen. A partition is two
actions: the node goes off the link when its entry is due and back on T seconds later.
Each entry fires once, in schedule order among those due together.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..faults import LinkChange


@dataclass(frozen=True, slots=True)
class LinkAction:
    """One thing to do to the lab: ``delay_ms``, ``rate_mbit``, ``loss`` (``value``), or
    ``disconnect`` / ``reconnect`` of ``node``."""

    what: str
    value: float | None = None
    node: int | None = None
    spec: str = ""  # the schedule entry it comes from


class LinkSchedule:
    def __init__(self, changes: list[LinkChange]):
        self.pending = list(changes)
        self.first_commit: float | None = None  # when the first committed step was seen
        self.reconnects: list[tuple[float, LinkAction]] = []  # (when, action)

    def partition(self, node: int, seconds: float, now: float, spec: str) -> LinkAction:
        """The action that cuts ``node`` off now; its reconnection becomes due ``seconds`` later."""
        self.reconnects.append((now + seconds, LinkAction("reconnect", node=node, spec=spec)))
        return LinkAction("disconnect", node=node, spec=spec)

    def due(self, step: int, now: float) -> list[LinkAction]:
        """The actions due at committed step ``step`` (0: none yet) and time ``now``."""
        if step > 0 and self.first_commit is None:
            self.first_commit = now
        elapsed = None if self.first_commit is None else now - self.first_commit
        out = []
        for c in list(self.pending):
            if not (c.step is not None and c.step <= step
                    or c.seconds is not None and elapsed is not None and elapsed >= c.seconds):
                continue
            self.pending.remove(c)
            if c.kind == "partition":
                out.append(self.partition(c.node, c.value, now, c.spec))
            else:
                what = {"link_delay": "delay_ms", "link_rate": "rate_mbit", "link_loss": "loss"}[c.kind]
                out.append(LinkAction(what, value=c.value, spec=c.spec))
        for when, action in list(self.reconnects):
            if now >= when:
                self.reconnects.remove((when, action))
                out.append(action)
        return out
