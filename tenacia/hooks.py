"""Named points on the training path where a plug-in may act, without training importing it.

Training and checkpoint code call ``reach(point, step)`` at a few places; a package that wants to
act there (``tenacia.chaos`` kills the process at an armed kill point) registers a listener with
``listen``. Nothing listens by default, and then ``reach`` costs one empty loop. Listeners are
process-wide, as signal handlers are: a process installs them at its start (``tenacia train``
and each replica process do, from their config and environment).

Points (the names users arm in ``chaos.kill_at``; ``tenacia.faults.KILL_POINTS``):
- ``mid_step``: gradients computed, optimizer not yet stepped;
- ``between_steps``: a step committed, the next not begun;
- ``phase:<name>``: a replica enters a phase of its step (``compute``, ``allreduce``, ``vote``,
  ``idle`` once the verdict came) or applies a committed step (``apply``);
- ``checkpoint:<file>``: one file of a checkpoint written into its temporary directory
  (``model.safetensors``, ``optimizer.safetensors``, ``state.safetensors``, ``manifest.json``),
  and ``checkpoint:renamed`` once the checkpoint is in place.
"""

from __future__ import annotations

from collections.abc import Callable

Listener = Callable[[str, int], None]
_listeners: list[Listener] = []


def listen(listener: Listener) -> Callable[[], None]:
    """Call ``listener(point, step)`` at every point reached; returns a function that stops it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def reach(point: str, step: int) -> None:
    """Training has reached ``point`` during step ``step``: tell every listener."""
    for listener in tuple(_listeners):
        listener(point, step)
