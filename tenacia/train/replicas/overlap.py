"""A step's reduce beside its compute: streaming's overlap (``OuterRounds.overlaps``, ``docs/sync.md``).

Order of a step under overlap (``Replica.run_step``):
1. ``Replica.begin_overlap``: the contribution is built from the state at rest (``sync.sent``: a
   new tensor, so the inner steps may start at once), passes the ``local_grads`` tamper site and,
   with the numeric checks on, is measured (fingerprint and norm: the reduce overwrites it); then
   ``InFlight`` reduces it on a thread of its own, once the quorum's group is ready;
2. the share's inner steps run meanwhile, on the training thread;
3. the training thread waits for the reduce (``Replica.reduce_in_flight``: asleep on the leader's
   inbox, so a newer quorum still supersedes the step) and votes as after a blocking reduce.

Contract: ``done`` is set, and ``wake`` called, once the reduce returned or raised, or the group
could not be built; ``error`` then holds what failed (a peer lost mid-exchange: the member votes
no, the round is discarded and redone, as with a blocking reduce). A thread left behind by a
superseded step ends when its group is retired (gloo's and the streams group's calls raise then).
Test: ``tests/train/replicas/test_overlap.py`` (the inner steps run while the exchange is in flight,
on a clock of forward passes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from .group import GroupBuilder

Reduce = Callable[[torch.Tensor, Any], None]  # (contribution, group): reduce it over the group, in place


class InFlight:
    def __init__(self, flat: torch.Tensor, step: int, reduce: Reduce, builder: GroupBuilder,
                 wake: Callable[..., None], measured: dict[str, Any] | None = None):
        """``measured``: the contribution's fingerprint and norm, taken before the reduce (None:
        checks off)."""
        self.flat, self.step, self.measured = flat, step, measured
        self.error: BaseException | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(reduce, builder, wake), name=f"overlap-{step}",
                         daemon=True).start()

    def _run(self, reduce: Reduce, builder: GroupBuilder, wake: Callable[..., None]) -> None:
        try:
            builder.done.wait()
            pg = builder.pg
            if pg is None:  # the group failed (the training thread reads builder.error) or was retired
                raise RuntimeError(f"no group for step {self.step}: {builder.error or 'retired'}")
            reduce(self.flat, pg)
        except Exception as e:  # noqa: BLE001 - a peer lost mid-exchange: the member votes no
            self.error = e
        finally:
            self.done.set()
            wake()

