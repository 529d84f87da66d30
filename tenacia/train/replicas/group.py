"""The quorum's process group: a fresh group per quorum, built off the training thread, and
the training thread's way of waiting on its collectives (``collect``). The group is gloo's, or,
under ``replicas.outer.transport = "streams"``, the long-link transport's (``streams_group.py``):
the same calls, waited on the same way."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..config import TransportConfig
from .streams_group import open_streams_group
from .timing import Timing

Streams = tuple[tuple[int, ...], TransportConfig, int]  # a streams group's members, settings, first step
Wait = Callable[[Callable[[], bool]], None]  # sleeps the training thread until the predicate holds


def collect(work: Any, wait: Wait, wake: Callable[..., None]) -> None:
    """Sleep (``wait``) until the collective ``work`` completes, or fails: then ``work.wait`` raises."""
    # the future completes (and runs its callbacks) just before the work marks itself completed:
    # wait on the future, or the wake finds the work not done yet
    done = work.get_future()
    done.add_done_callback(wake)  # also on error: a peer died mid-collective
    wait(done.done)
    work.wait()


def gloo_all_gather(buf: torch.Tensor, group: Any, wait: Wait, wake: Callable[..., None]) -> list[torch.Tensor]:
    """All-gather of one equal-sized tensor per member over a torch process group, in rank order."""
    out = [torch.empty_like(buf) for _ in range(group.size())]
    collect(group.allgather([out], [buf]), wait, wake)
    return out


def all_to_all(parts: list[torch.Tensor], sizes: list[int], group: Any, wait: Wait,
               wake: Callable[..., None]) -> list[torch.Tensor]:
    """``parts[k]`` (flat uint8) to member k over a torch process group (gloo's or a
    ``StreamsGroup``); returns what each member k sent here (``sizes[k]`` bytes), in rank order,
    on the parts' device (the bytes travel through host memory: gloo's all-to-all is CPU-only)."""
    out = torch.empty(sum(sizes), dtype=torch.uint8)
    work = group.alltoall_base(out, torch.cat(parts).cpu(), list(sizes), [p.numel() for p in parts])
    collect(work, wait, wake)
    return list(out.to(parts[0].device).split(list(sizes)))


class GroupBuilder:
    """Builds the quorum's gloo group in a thread; the training thread goes on meanwhile and is
    told by ``notify`` (called from the builder's thread) once the group is ready or failed."""

    def __init__(self, store_addr: str, quorum_id: int, rank: int, world: int, host: str,
                 notify: Callable[[], None] | None = None, timing: Timing | None = None,
                 streams: Streams | None = None):
        """``streams``: (members, mesh settings, first step) to build the long-link transport's
        group instead of gloo's."""
        self.pg: Any = None
        self.timing = timing or Timing()
        self.notify = notify
        self.error: str | None = None
        self.ready_t: float | None = None  # wall-clock time the group was built (or failed)
        self.done = threading.Event()
        args = (store_addr, quorum_id, rank, world, host, streams)
        threading.Thread(target=self._build, args=args, name=f"pg-{quorum_id}", daemon=True).start()

    def _build(self, store_addr: str, quorum_id: int, rank: int, world: int, host: str,
               streams: Streams | None) -> None:
        try:
            shost, port = store_addr.rsplit(":", 1)
            store = dist.TCPStore(shost, int(port), is_master=False,
                                  timeout=timedelta(seconds=self.timing.store_client_s))
            if streams is not None:
                members, config, first_step = streams
                self.pg = open_streams_group(store, quorum_id, rank, members, host, config, first_step,
                                             self.timing.store_client_s)
                return
            opts = dist.ProcessGroupGloo._Options()
            opts._timeout = timedelta(seconds=self.timing.collective_s)
            iface = os.environ.get("GLOO_SOCKET_IFNAME")
            device = (dist.ProcessGroupGloo.create_device(interface=iface) if iface
                      else dist.ProcessGroupGloo.create_device(hostname=host))
            opts._devices = [device]
            self.pg = dist.ProcessGroupGloo(dist.PrefixStore(f"q{quorum_id}", store), rank, world, opts)
        except Exception as e:  # noqa: BLE001 - any failure means: this quorum cannot run
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.ready_t = time.time()
            self.done.set()
            if self.notify is not None:
                self.notify()


def retire(builder: GroupBuilder) -> threading.Thread:
    """Tear down a quorum's old group off the training thread; returns the (daemon) thread doing it.

    Every parked gloo group keeps its own TCP loop thread, worker threads, sockets and store
    connection. Kept forever, a group whose peer was SIGKILLed mid-collective can leave its
    ``gloo_tcp_loop`` spinning, a large share of a core per such group in a survivor, growing
    with each fault (docs/benchmarks.md, "Runs of 22:11-22:41"). ``shutdown()`` returns at once,
    even with a collective still in flight against a dead or stopped peer; the group's
    destructor, though, waits for that collective to finish or time out (up to the group
    timeout, ``Timing.collective_s``), without holding the GIL. So this thread, not the caller, drops the last
    reference. A group still being built is waited for first.
    A streams group (``streams_group.py``) has no such loop: its ``shutdown`` closes the mesh,
    and a call in flight raises at once.
    The caller must hold no other reference to ``builder.pg`` (the builder is left without one),
    nor any of its ``Work`` objects: a Work keeps its group alive, and whoever drops the last
    reference runs the destructor.
    """

    def _retire() -> None:
        builder.done.wait()
        pg, builder.pg = builder.pg, None
        if pg is None:
            return
        try:
            pg.shutdown()
        except Exception:  # noqa: BLE001 - a group that is already broken is torn down all the same
            pass
        del pg  # the destructor may block here until an abandoned collective times out

    t = threading.Thread(target=_retire, name="pg-retire", daemon=True)
    t.start()
    return t
