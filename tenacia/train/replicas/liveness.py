"""What the leader knows of each member, and the liveness rules that expel one (the contract is in
``coordinator.py``, "Membership"; the bounds in ``timing.py``): silent longer than the hang bound
(counted only while the leader hears its own member), stuck in its compute phase longer than the
stuck bound while a peer already waits in the all-reduce (the bound follows the member's own
compute times too: ``own_stuck_bound``, so that a slow replica, or a diloco round of many inner
steps, is not taken for a hung one); and a collective in which every member
has waited longer than the hang bound is stuck itself; a member re-executing a share for the
leader's numeric checks longer than the stuck bound is stuck too. Pure functions of the members' records and
the time: the coordinator acts on what they return.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from .protocol import Addrs, Quorum, Vote
from .timing import Timing
from .wire import Conn


@dataclass
class MemberState:
    replica: int
    conn: Conn
    addrs: Addrs
    committed: int
    pending: int | None  # step whose reduced gradients it holds, awaiting a verdict
    quorum_seen: int
    last_hb: float  # when it was last heard (Clock.now)
    pending_vote: Vote | None = None
    phase: str = "idle"
    phase_step: int | None = None
    phase_since: float = 0.0
    compute_times: deque[float] = field(default_factory=lambda: deque(maxlen=20))  # its own, heard from heartbeats

    def entered(self, phase: str, step: int, now: float) -> None:
        """A heartbeat says it is in ``phase`` of ``step``: a compute phase it left is timed."""
        if (phase, step) == (self.phase, self.phase_step):
            return
        if self.phase == "compute":
            self.compute_times.append(now - self.phase_since)
        self.phase, self.phase_step, self.phase_since = phase, step, now


def own_stuck_bound(m: MemberState, stuck_bound: float, timing: Timing) -> float:
    """The stuck bound for member ``m``: the quorum's, or ``stuck_factor x hang_factor x`` the
    median of its own recent compute phases (measured at the leader from its heartbeats, once
    ``min_step_samples`` were seen), whichever is longer."""
    return max(stuck_bound, timing.stuck_factor * timing.hang_bound(m.compute_times))


def expulsions(members: Mapping[int, MemberState], leader: int, q: Quorum | None, now: float, timeout: float,
               stuck_bound: float, timing: Timing | None = None) -> list[tuple[int, str]]:
    """Members to expel as hung at ``now``, with why (``timing``: each member's stuck bound follows
    its own compute times, ``own_stuck_bound``)."""
    in_quorum = [members[r] for r in (q.members if q else ()) if r in members]
    waiting_in_allreduce = any(m.phase == "allreduce" for m in in_quorum)
    own = members.get(leader)  # heard through the leader's own reader threads too
    hearing = own is None or now - own.last_hb < timeout / 2
    out = []
    for rid, m in list(members.items()):
        if rid == leader:
            continue  # the leader's own member side lives in its process
        if now - m.last_hb > timeout and hearing:
            out.append((rid, f"silent for {now - m.last_hb:.2f}s > {timeout:.2f}s"))
        elif (m.phase == "compute" and waiting_in_allreduce and m in in_quorum
              and now - m.phase_since > (bound := own_stuck_bound(m, stuck_bound, timing) if timing else stuck_bound)):
            out.append((rid, f"stuck in its step for {now - m.phase_since:.2f}s > {bound:.2f}s"))
        elif m.phase == "recheck" and m in in_quorum and now - m.phase_since > stuck_bound:
            out.append((rid, f"stuck re-executing a share for {now - m.phase_since:.2f}s > {stuck_bound:.2f}s"))
    return out


def collective_stuck(q: Quorum, in_quorum: list[MemberState], now: float, timeout: float) -> bool:
    """Every member of ``q`` is alive and has waited in the all-reduce longer than the hang bound."""
    return (bool(in_quorum) and len(in_quorum) == len(q.members)
            and all(m.phase == "allreduce" and now - m.phase_since > timeout for m in in_quorum))
