"""Named, deterministic kill points for crash tests.

A kill point is a place in the code where a fault can be made to fire: ``hit(name, step)`` kills
the process with SIGKILL (no cleanup, no flush: the harshest crash) when the armed point matches.
Points are armed by a spec ``"<name>@<step>"``, e.g. ``"mid_step@17"`` or
``"checkpoint:model.safetensors@20"``, given in the config (``chaos.kill_at``) or in the
environment variable ``TENACIA_KILL_AT`` (for processes a test starts).

Named points:
- ``mid_step``: gradients computed, optimizer not yet stepped.
- ``between_steps``: a step committed, the next not begun.
- ``checkpoint:<file>``: one file of a checkpoint written into its temporary directory
  (``model.safetensors``, ``optimizer.safetensors``, ``state.safetensors``, ``manifest.json``),
  and ``checkpoint:renamed`` once the checkpoint is in place.
"""

from __future__ import annotations

import os
import signal

from ..config import check

_armed: tuple[str, int] | None = None


def parse(spec: str) -> tuple[str, int] | None:
    """``'mid_step@17'`` -> ('mid_step', 17); '' -> None."""
    if not spec:
        return None
    name, sep, step = spec.rpartition("@")
    check(bool(sep) and bool(name) and step.isdigit(), "chaos.kill_at", spec,
          "'<point>@<step>' with point one of mid_step, between_steps, checkpoint:<file>")
    return name, int(step)


def arm(spec: str | None) -> None:
    """Arm one kill point (the config's, else the environment's)."""
    global _armed
    _armed = parse(spec or os.environ.get("TENACIA_KILL_AT", ""))


def hit(name: str, step: int) -> None:
    if _armed is not None and _armed == (name, step):
        os.kill(os.getpid(), signal.SIGKILL)
