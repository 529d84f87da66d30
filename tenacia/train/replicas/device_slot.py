"""Which device a replica computes on, by name, and the exit that bans it.

A device is named ``host:slot``. On an accelerator the slot would be the chip's index on its host;
on CPU it is the replica's place on its host, which the launcher numbers 0, 1, ... at the start
and passes in ``SLOT_ENV`` (a replica started by hand uses its id). A replica evicted for wrong
numbers exits with ``EXIT_EVICTED``; its launcher never reuses that slot in the run and restarts
the replica on a slot never used before (``launcher.Launcher.evicted``).
"""

from __future__ import annotations

import os
import socket

SLOT_ENV = "TENACIA_DEVICE_SLOT"
EXIT_EVICTED = 75  # EX_TEMPFAIL: the process is healthy, its device is not


def device_name(replica: int) -> str:
    """``host:slot`` of the device this process computes on."""
    return f"{socket.gethostname()}:{os.environ.get(SLOT_ENV, replica)}"
