"""Healing: a newcomer receives a live peer's state over the network, not from disk.

Contract: when a quorum names ``newcomer -> donor`` for step S, the donor's training thread posts
a host-memory snapshot of its state after step S-1 (weights, AdamW moments, sampler position,
counters) with ``HealServer.offer`` before it touches step S, then goes on training. A background
thread streams that snapshot to the newcomer. The newcomer takes part in step S's all-reduce with
zero gradients (it holds no share of the batch) while the state arrives, loads it, then applies
the same reduced gradients as everyone: after the step all members hold equal state. If either
side dies meanwhile, the step is discarded like any other and the next quorum names a donor again.

Wire format: the snapshot is packed by ``offer`` into one contiguous byte buffer (each tensor's raw
bytes at a 64-byte aligned offset) and sent as a single blob after a ``protocol.HealState`` that
carries the layout (name, dtype, shape, offset, bytes) and the donor's counters. Nothing is serialised: the donor's sending thread hands the
buffer to the kernel in one ``sendall``, the newcomer receives it with one blocking ``recv_into``
(``MSG_WAITALL``) into one preallocated buffer and takes tensor views of it. Python holds the GIL for only a few calls on
either side, so the transfer does not wait on the training thread and hides behind a step's
compute, far faster than the safetensors round trip it replaced (docs/fault-model.md, "How
tenacia reacts").
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from .protocol import HealError, HealRequest, HealState, Layout
from .timing import Timing
from .wire import Conn, listen, serve_forever, sock_addr

ALIGN = 64
SOCK_BUF = 8 << 20  # bytes of kernel socket buffer per side of a heal connection


def pack(*parts: dict[str, torch.Tensor]) -> tuple[list[Layout], torch.Tensor]:
    """Copy each dict of ``parts`` into one contiguous host uint8 buffer; return a layout per part
    and the buffer."""
    layouts: list[Layout] = []
    size = 0
    for tensors in parts:
        layout = []
        for name, t in tensors.items():
            nbytes = t.numel() * t.element_size()
            layout.append((name, str(t.dtype).removeprefix("torch."), tuple(t.shape), size, nbytes))
            size += -(-nbytes // ALIGN) * ALIGN
        layouts.append(tuple(layout))
    buf = torch.empty(size, dtype=torch.uint8)
    for layout, tensors in zip(layouts, parts, strict=True):
        for (_, _, _, off, nbytes), t in zip(layout, tensors.values(), strict=True):
            buf[off:off + nbytes].view(t.dtype).view(t.shape).copy_(t.detach())
    return layouts, buf


def unpack(layout: Layout, buf: torch.Tensor) -> dict[str, torch.Tensor]:
    """Tensors of ``layout`` as views of ``buf`` (no copy); ``ValueError`` for a layout that does
    not describe ``buf``."""
    out = {}
    for name, dtype, shape, off, nbytes in layout:
        dt = getattr(torch, dtype, None)
        if not isinstance(dt, torch.dtype) or off < 0 or off + nbytes > buf.numel():
            raise ValueError(f"heal layout entry {name!r} ({dtype}, {off}+{nbytes}) does not fit the state")
        out[name] = buf[off:off + nbytes].view(dt).view(shape)
    return out


class HealServer:
    """Serves this replica's state snapshots to newcomers, keyed by quorum id."""

    def __init__(self, host: str, advertise: str, timing: Timing | None = None):
        self.sock = listen(host)
        self.addr = sock_addr(self.sock, advertise)
        self.timing = timing or Timing()
        self._offers: dict[int, tuple[HealState, torch.Tensor]] = {}
        self._cond = threading.Condition()
        serve_forever(self.sock, self._serve, "heal-accept")

    def offer(self, quorum_id: int, meta: dict[str, Any], model: dict[str, torch.Tensor],
              optim: dict[str, torch.Tensor]) -> None:
        """Post the state for ``quorum_id``: one copy into a packed host buffer, then return."""
        (model_layout, optim_layout), buf = pack(model, optim)
        header = HealState(model=model_layout, optim=optim_layout, meta=dict(meta))
        with self._cond:
            self._offers = {q: o for q, o in self._offers.items() if q >= quorum_id - 2}
            self._offers[quorum_id] = (header, buf)
            self._cond.notify_all()

    def _serve(self, conn: Conn) -> None:
        try:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            conn.set_kernel_timeout(self.timing.heal_io_s)
            req, _ = conn.recv()
            if not isinstance(req, HealRequest):
                conn.try_send(HealError(f"expected a heal request, got {type(req).__name__}"))
                return
            qid = req.quorum_id
            with self._cond:
                if not self._cond.wait_for(lambda: qid in self._offers, timeout=self.timing.heal_offer_s):
                    conn.try_send(HealError(f"no state offered for quorum {qid}"))
                    return
                header, buf = self._offers[qid]
            conn.send(header, memoryview(buf.numpy()))
        except (ConnectionError, OSError):
            pass  # the newcomer went away; it will be healed again in a later quorum
        finally:
            conn.close()


class HealFetch:
    """The newcomer's download of a donor's state, running in a background thread.

    ``result`` is ``(meta, model, optim)``: model tensors are views of the received buffer (they
    are copied into the parameters on load); optimizer tensors are copies, as the optimizer keeps
    them."""

    def __init__(self, donor_addr: str, quorum_id: int, notify: Callable[[], None] | None = None,
                 timing: Timing | None = None):
        self.donor_addr, self.quorum_id, self.notify = donor_addr, quorum_id, notify
        self.timing = timing or Timing()
        self.result: tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        self.error: str | None = None
        self.nbytes = 0
        self.transfer_s = 0.0  # from the request to the unpacked state
        self.t0 = time.monotonic()
        self.done = threading.Event()
        threading.Thread(target=self._run, name="heal-fetch", daemon=True).start()

    def _run(self) -> None:
        try:
            conn = Conn.connect(self.donor_addr, timeout=self.timing.heal_connect_s)
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
            # the donor answers once its training thread offers the state
            conn.set_kernel_timeout(self.timing.heal_io_s)
            try:
                conn.send(HealRequest(self.quorum_id))
                reply, blobs = conn.recv()
            finally:
                conn.close()
            if isinstance(reply, HealError):
                raise ConnectionError(reply.reason)
            if not isinstance(reply, HealState) or len(blobs) != 1:
                raise ConnectionError(f"bad reply from donor: {type(reply).__name__} with {len(blobs)} blobs")
            self.nbytes = len(blobs[0])
            buf = torch.frombuffer(blobs[0], dtype=torch.uint8) if self.nbytes else torch.empty(0, dtype=torch.uint8)
            model = unpack(reply.model, buf)
            optim = {k: v.clone() for k, v in unpack(reply.optim, buf).items()}
            self.result = (dict(reply.meta), model, optim)
            self.transfer_s = time.monotonic() - self.t0
        except (OSError, ValueError, RuntimeError) as e:
            self.error = str(e)
        finally:
            self.done.set()
            if self.notify is not None:
                self.notify()
