"""Process plumbing the launcher, the spare and the labs share: a child that dies with its
parent, and whether a pid is alive (Linux)."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``; survives ``exec``).
    Usable as a ``preexec_fn``, and after a ``fork``."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def alive(pid: int | None) -> bool:
    """Whether a process with this pid exists (a zombie counts until it is reaped)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
