"""Healing: a newcomer receives a live peer's state over the network, not from disk.

Contract: when a quorum names ``newcomer -> donor`` for step S, the donor's training thread posts
a host-memory snapshot of its state after step S-1 (weights, AdamW moments, sampler position,
counters) with ``HealServer.offer`` before it touches step S, then goes on training. A background
thread streams that snapshot to the newcomer. The newcomer takes part in step S's all-reduce with
zero gradients (it holds no share of the batch) while the state arrives, loads it, then applies
the same reduced gradients as everyone: after the step all members hold equal state. If either
side dies meanwhile, the step is discarded like any other and the next quorum names a donor again.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .wire import Conn, listen, serve_forever, sock_addr


class HealServer:
    """Serves this replica's state snapshots to newcomers, keyed by quorum id."""

    def __init__(self, host: str, advertise: str):
        self.sock = listen(host)
        self.addr = sock_addr(self.sock, advertise)
        self._offers: dict[int, tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}
        self._cond = threading.Condition()
        serve_forever(self.sock, self._serve, "heal-accept")

    def offer(self, quorum_id: int, meta: dict[str, Any], model: dict[str, torch.Tensor],
              optim: dict[str, torch.Tensor]) -> None:
        """Post the state for ``quorum_id`` (tensors are copied to host memory first)."""
        host = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.items()}
        host_opt = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in optim.items()}
        with self._cond:  # serialised by the sending thread, off the training thread
            self._offers = {q: o for q, o in self._offers.items() if q >= quorum_id - 2}
            self._offers[quorum_id] = (meta, host, host_opt)
            self._cond.notify_all()

    def _serve(self, conn: Conn) -> None:
        try:
            req, _ = conn.recv()
            qid = int(req["quorum_id"])
            with self._cond:
                if not self._cond.wait_for(lambda: qid in self._offers, timeout=30):
                    conn.try_send({"type": "error", "reason": f"no state offered for quorum {qid}"})
                    return
                meta, model, optim = self._offers[qid]
            conn.send({"type": "state", **meta}, st_save(model), st_save(optim))
        except (ConnectionError, OSError):
            pass  # the newcomer went away; it will be healed again in a later quorum
        finally:
            conn.close()


class HealFetch:
    """The newcomer's download of a donor's state, running in a background thread."""

    def __init__(self, donor_addr: str, quorum_id: int):
        self.donor_addr, self.quorum_id = donor_addr, quorum_id
        self.result: tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        self.error: str | None = None
        self.nbytes = 0
        self.t0 = time.monotonic()
        self.done = threading.Event()
        threading.Thread(target=self._run, name="heal-fetch", daemon=True).start()

    def _run(self) -> None:
        try:
            conn = Conn.connect(self.donor_addr, timeout=2.0)
            conn.settimeout(60.0)  # the donor answers once its training thread offers the state
            try:
                conn.send({"type": "fetch", "quorum_id": self.quorum_id})
                meta, blobs = conn.recv()
            finally:
                conn.close()
            if meta.get("type") != "state" or len(blobs) != 2:
                raise ConnectionError(meta.get("reason", "bad reply from donor"))
            self.nbytes = sum(len(b) for b in blobs)
            self.result = (meta, st_load(bytes(blobs[0])), st_load(bytes(blobs[1])))
        except (OSError, ConnectionError, ValueError) as e:
            self.error = str(e)
        finally:
            self.done.set()
