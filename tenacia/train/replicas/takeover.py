"""Takeover: the fate of the step the old leader may have been committing.

A new leader does not know the old votes. It asks the survivors in step with the newest
step S any of them knows (a newcomer still healing had no part in S; it is healed afterwards): if
one has committed S, S is committed (a member applies S only on the verdict, sent after the
ledger recorded S); if each holds S's reduced gradients ready, S is committed (the old leader can
only have committed what all members had ready; the ledger records S again); otherwise S is
discarded (the old leader cannot have committed it). Either way the survivors agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ...data.ledger import SampleLedger
from .protocol import Resolve, Vote


class Survivor(Protocol):
    committed: int
    pending: int | None
    pending_vote: Vote | None


def resolve_takeover(live: Mapping[int, Survivor], ledger: SampleLedger | None, events: Any,
                     term: int) -> Resolve | None:
    """The fate of the newest step ``top`` any survivor in ``live`` knows (module docstring); None
    when all of them committed it. The ledger gets ``top`` again (under ``term``) if it is committed
    from ready gradients."""
    top = max(max(m.committed, m.pending or 0) for m in live.values())
    voters = [m for m in live.values() if m.committed >= top - 1 or m.pending == top]
    if all(m.committed == top for m in voters):
        return None
    if any(m.committed == top for m in voters):
        # a member applies a step only on the commit verdict, which the old leader sent after
        # recording the step in the ledger: `top` is committed and already recorded
        return Resolve(top, commit=True)
    ready = all(m.pending == top for m in voters)
    if ledger is not None:
        # The old leader may or may not have recorded `top` before it died: drop it either way,
        # and record it again if the survivors commit it.
        ledger.rewind(top - 1, term=term)
        votes = [m.pending_vote for m in voters if m.pending_vote]
        if ready and votes:
            ledger.record(top, votes[0].start, list(votes[0].batch), term=term)
    events.emit("step_committed" if ready else "step_discarded", step=top, members=sorted(live),
                reason="decided by the new leader after takeover")
    return Resolve(top, commit=ready)
