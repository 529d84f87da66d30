"""A replica's side of healing in a quorum's first step: a donor offers its state, a newcomer (or
a member whose state was found corrupt) fetches and loads it (a part of ``Replica``; the transfer
itself is ``heal.py``)."""

from __future__ import annotations

import time
from typing import Any

from ... import checkpoint as ckpt
from .apply import OUTER, load_healed
from .heal import HealFetch
from .protocol import Quorum


class NewcomerHealing:
    def start_healing(self: Any, q: Quorum) -> HealFetch | None:
        """A quorum's first step: a donor offers its state (before touching the step), a newcomer
        starts fetching its donor's; returns the newcomer's fetch."""
        t = self.trainer
        fetch = None
        if self.id in q.heal:
            donor = q.heal[self.id]
            fetch = HealFetch(q.addrs[donor].heal, q.quorum_id, notify=self.wake, timing=self.timing)
            self.events.emit("heal_started", step=q.step, replica=self.id, peer=donor)
        if self.id in q.heal.values():
            optim = ckpt.optimizer_tensors(t.model, t.optimizer)
            if t.outer is not None:  # diloco, streaming: the global parameters and outer momenta too
                optim |= {OUTER + k: v for k, v in t.outer.tensors().items()}
            self.heal_server.offer(q.quorum_id, {"step": t.step, "sampler": t.sampler.state_dict(),
                                                 "tokens_seen": t.tokens_seen, "data_fingerprint": t.data.fingerprint},
                                   ckpt.model_tensors(t.model), optim)
        return fetch

    def finish_healing(self: Any, fetch: HealFetch, q: Quorum) -> bool:
        """Wait for the donor's state and load it; False when the transfer failed."""
        self.wait_until(fetch.done.is_set, "healing")
        if fetch.error:
            return False
        self.load_healed(fetch, q)
        return True

    def load_healed(self: Any, fetch: HealFetch, q: Quorum) -> None:
        load_healed(self.trainer, *fetch.result)
        self.numerics.settle(len(q.members))
        t = self.trainer
        self.events.emit("heal_done", step=t.step, replica=self.id, peer=q.heal[self.id],
                         heal_s=round(time.monotonic() - fetch.t0, 4), transfer_s=round(fetch.transfer_s, 4),
                         bytes=fetch.nbytes)
