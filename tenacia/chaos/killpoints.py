"""Named, deterministic kill points for crash tests, installed on ``tenacia.hooks``.

A kill point is a place on the training path (``tenacia.hooks`` lists them) where a fault can be
made to fire: when the armed point is reached, the process kills itself with SIGKILL (no cleanup,
no flush: the harshest crash). A point is armed by a spec ``"<point>@<step>"``, e.g.
``"mid_step@17"`` or ``"checkpoint:model.safetensors@20"``, given in the config
(``chaos.kill_at``) or in the environment variable ``TENACIA_KILL_AT`` (for processes a test or
the launcher starts).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from .. import hooks
from ..faults import parse_kill_point

ENV_VAR = "TENACIA_KILL_AT"


def install(spec: str = "") -> Callable[[], None] | None:
    """Arm one kill point (``spec``, else the environment's) in this process; returns a function
    that disarms it, or None when nothing was armed."""
    armed = parse_kill_point(spec or os.environ.get(ENV_VAR, ""), "chaos.kill_at")
    if armed is None:
        return None

    def kill(point: str, step: int) -> None:
        if (point, step) == armed:
            os.kill(os.getpid(), signal.SIGKILL)

    return hooks.listen(kill)
