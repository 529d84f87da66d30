"""How a replica leaves the step (or the job) it is in, raised on its training thread and caught
by ``Replica.run`` / ``follow_quorums``."""

from __future__ import annotations


class Superseded(Exception):
    """A newer quorum (or a stop) arrived: drop the step in flight."""


class Rejoin(Exception):
    """This replica was expelled or frozen: exit and come back as a newcomer."""


class Evicted(Exception):
    """This replica's device computes wrong numbers: leave the job for good (``EXIT_EVICTED``)."""
