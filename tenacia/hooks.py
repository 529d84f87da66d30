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
- ``speculating:<replica>``: replica ``<replica>`` trained an inner batch of round ``step`` ahead,
  its vote on the round before sent (``replicas.outer.speculate``);
- ``checkpoint:<file>``: one file of a checkpoint written into its temporary directory
  (``model.safetensors``, ``optimizer.safetensors``, ``state.safetensors``, ``manifest.json``),
  and ``checkpoint:renamed`` once the checkpoint is in place.

Values a plug-in may alter on the way (``tamper(site, step, value)``, wrong numbers injected by
``tenacia.chaos``): a listener registered with ``tamper_with`` gets the value, may change a tensor
in place, and returns the value to use. Sites (``TAMPER_SITES``) and their values:
- ``params`` / ``moments``: the parameters / the AdamW moments (a list of tensors) at rest, when a
  replica starts computing a step (after the previous commit);
- ``activations``: the logits of one micro-batch (a tensor) before the loss reads them;
- ``local_grads``: this member's flat gradient contribution, before the reduce;
- ``reduced_grads``: the reduced flat gradients on this member, after the reduce;
- ``loss``: this member's mean loss of its share (a float);
- ``vote``: the vote checks this member sends (a dict, ``replicas/votecheck.py``);
- ``lr``: the learning rate the committed step applies (a float).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Listener = Callable[[str, int], None]
Tamperer = Callable[[str, int, Any], Any]
TAMPER_SITES = ("params", "moments", "activations", "local_grads", "reduced_grads", "loss", "vote", "lr")
_listeners: list[Listener] = []
_tamperers: list[Tamperer] = []


def listen(listener: Listener) -> Callable[[], None]:
    """Call ``listener(point, step)`` at every point reached; returns a function that stops it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def reach(point: str, step: int) -> None:
    """Training has reached ``point`` during step ``step``: tell every listener."""
    for listener in tuple(_listeners):
        listener(point, step)


def tamper_with(tamperer: Tamperer) -> Callable[[], None]:
    """Pass every value at a tamper site through ``tamperer(site, step, value)``; returns a function
    that stops it."""
    _tamperers.append(tamperer)
    return lambda: _tamperers.remove(tamperer) if tamperer in _tamperers else None


def tamper(site: str, step: int, value: Any) -> Any:
    """``value`` at ``site`` of step ``step``, as the tamperers leave it (unchanged when none)."""
    for tamperer in tuple(_tamperers):
        value = tamperer(site, step, value)
    return value


def tampering() -> bool:
    """Whether any tamperer listens (a site whose value costs work to build may skip it otherwise)."""
    return bool(_tamperers)
