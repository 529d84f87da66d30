"""The majority rule: who may form a quorum when members went silent.

A member lost to silence may be alive on the other side of a partition, leading a
quorum of its own. So a leader without a valid exclusive lease (``lease.py``) forms a quorum only
with more than half of the last quorum's members, or exactly half if that half holds the lowest
id among them. The last quorum is the newest one that committed a step as far as this leader or
any live member knows (``Hello.settled``): a quorum formed but never committed may not have
reached the members it names, so it is no base; a job's first quorum is the base until then;
members proven dead (their connection closed: a crash, a clean leave) do not count. Otherwise it
waits (``quorum_refused``) until they come back or a newer term fences it. A leader with a valid
exclusive lease (etcd) may go on with any quorum, since nobody else can lead meanwhile; but once
it hears none of the last quorum's other members, it releases the lease and steps down
(``coordinator_alone``), so the members it cannot hear can elect a leader they can.

Ahead (``behind``): a quorum never starts below the step a replica that left recently still holds
(it may be rejoining: a frozen process, a closed connection), for up to the stuck bound after it
was lost; then the run goes on from the live replicas' step (the leader rewinds the ledger).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def minority(base: Sequence[int], dead: Collection[int], live: Collection[int], leader: int,
             exclusive: bool) -> str | None:
    """Why ``live`` may not form a quorum (None: it may). ``base``: the members of the newest
    quorum known to have committed a step; ``dead``: members proven dead; ``leader``: the asking
    leader's id; ``exclusive``: it holds a valid exclusive lease. ``"alone"``: an exclusive leader
    that hears none of ``base``'s other live members must step down."""
    voters = [r for r in base if r not in dead]
    have = [r for r in voters if r in live]
    if not voters:
        return None
    if exclusive:
        return "alone" if have == [leader] and len(voters) > 1 else None
    if 2 * len(have) > len(voters) or (2 * len(have) == len(voters) and min(voters) in have):
        return None
    return (f"only {have} of the last quorum's {voters} are here; the others went silent and may "
            "be leading on their side of a partition")


def behind(away: dict[int, tuple[int, float | None]], have: int, now: float, grace: float) -> str | None:
    """Why a quorum of live replicas holding at most step ``have`` must wait (None: it need not).
    ``away``: replicas not live, by id: (the step each last reported, when it was lost)."""
    ahead = {r: s for r, (s, lost) in away.items() if s > have and now - (now if lost is None else lost) <= grace}
    if not ahead:
        return None
    return (f"replica(s) {sorted(ahead)} hold step {max(ahead.values())} but the live ones only {have}: "
            "waiting for one to come back")
