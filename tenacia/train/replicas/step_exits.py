"""How a replica leaves the step (or the job) it is in, raised on its training thread and caught
by ``Replica.run`` / ``follow_quorums``."""

from __future__ import annotations


class Superseded(Exception):
    """A newer quorum (or a stop) arrived: drop the step in flight."""


class Rejoin(Exception):
    """This replica was expelled or frozen: exit and come back as a newcomer."""


class Evicted(Exception):
    """This replica's device computes wrong numbers: leave the job for good (``EXIT_EVICTED``)."""


EXIT_FINISH_LOST = 70  # EX_SOFTWARE: the job ended, but not in a state this replica holds


class FinishLost(Exception):
    """This replica's coordinator ended the job at a step this replica does not hold (the verdict
    and the stop were lost with its link, and nothing was pending): nobody can write the final
    checkpoint, eval and ``finished.json``. Exit ``EXIT_FINISH_LOST``, never 0, so the launcher
    does not take the job for finished (it restarts nobody either: its peers have exited; the job
    resumes whole from its newest checkpoint)."""
