"""The quorum's group over the long-link transport (``replicas.outer.transport = "streams"``).

A ``StreamsGroup`` stands where a quorum's gloo group stands (``group.GroupBuilder`` makes one or
the other, ``group.retire`` tears either down), with the part of a torch process group's API the
sync strategies call: ``size``, ``rank``, ``allreduce([t])`` (sum in place), ``allgather([outs], [t])``,
``alltoall_base(out, t, out_sizes, in_sizes)`` and ``shutdown``. So the strategies, their fault tolerance and the ``Gather`` seam are the same on both
transports; only the wires differ (``tenacia.train.transport``: several TCP streams per peer, a
direct reduce-scatter + all-gather, sums in rank order).

Contract:
- ``open_streams_group`` makes one mesh per quorum: a fresh listener, its address put in the
  quorum's store and the peers' read back (the rendezvous gloo makes through the same store, so no
  round trip is added), then ``Mesh.open``. Every frame carries the quorum's member list and the
  call's round id (the quorum's first step, plus one per call): membership rides with the data.
- A collective runs on a thread of its own and returns at once a ``Work`` whose future completes
  when it is done or failed; ``wait()`` raises ``TransportError`` when a peer died, closed, froze
  past ``mesh.timeout_s`` or answered in another group (``group.collect`` waits on it exactly as
  on gloo's). A peer's SIGKILL closes its streams: the survivors' call raises at once, and the
  round is discarded and redone by the next quorum, as on gloo.
- ``shutdown`` closes the mesh; a call still in flight raises at once (``Mesh.close``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist

from ..config import TransportConfig
from ..transport import Mesh, listen


class Work:
    """One collective in flight on its own thread (the part of a torch ``Work`` ``collect`` uses)."""

    def __init__(self, run: Callable[[], None], name: str):
        self.future: torch.futures.Future = torch.futures.Future()
        threading.Thread(target=self._run, args=(run,), name=name, daemon=True).start()

    def _run(self, run: Callable[[], None]) -> None:
        try:
            run()
        except BaseException as e:  # noqa: BLE001 - whatever failed, the waiter is told through the future
            self.future.set_exception(e)
        else:
            self.future.set_result(None)

    def get_future(self) -> torch.futures.Future:
        return self.future

    def wait(self) -> None:
        """Block until done; raise the collective's error if it failed."""
        self.future.wait()


class StreamsGroup:
    def __init__(self, mesh: Mesh, first_round: int):
        self.mesh = mesh
        self.round = first_round  # the round id of the next call; every member counts alike
        self.lock = threading.Lock()  # calls are taken in order (one a step in practice)

    def size(self) -> int:
        return len(self.mesh.members)

    def rank(self) -> int:
        return self.mesh.rank

    def _next_round(self) -> int:
        with self.lock:
            self.round += 1
            return self.round - 1

    def allreduce(self, tensors: list[torch.Tensor]) -> Work:
        """Sum ``tensors[0]`` over the group, in place, bit-identical on every member."""
        (t,), round_id = tensors, self._next_round()

        def run() -> None:
            t.copy_(self.mesh.allreduce_sum(t, round_id))

        return Work(run, f"streams-allreduce-{round_id}")

    def allgather(self, outputs: list[list[torch.Tensor]], inputs: list[torch.Tensor]) -> Work:
        """Every member's ``inputs[0]`` into ``outputs[0]``, in rank order (equal sizes, as gloo's)."""
        (outs,), (t,), round_id = outputs, inputs, self._next_round()

        def run() -> None:
            data = t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
            for out, got in zip(outs, self.mesh.allgather(data, round_id), strict=True):
                out.copy_(torch.frombuffer(bytearray(got), dtype=t.dtype).view(t.shape))

        return Work(run, f"streams-allgather-{round_id}")

    def alltoall_base(self, output: torch.Tensor, input: torch.Tensor, output_split_sizes: list[int],
                      input_split_sizes: list[int]) -> Work:
        """As torch's: slice k of ``input`` (``input_split_sizes`` along dim 0) to member k; what
        member k sent here into slice k of ``output`` (``output_split_sizes``)."""
        round_id = self._next_round()

        def run() -> None:
            data = input.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
            row = input[:1].numel() * input.element_size() if input.numel() else 0
            cuts = [0]
            for size in input_split_sizes:
                cuts.append(cuts[-1] + size * row)
            got = self.mesh.alltoall([data[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)], round_id)
            for out, blob in zip(output.split(output_split_sizes), got, strict=True):
                if out.numel():  # a size other than expected raises here: the call fails
                    out.copy_(torch.frombuffer(bytearray(blob), dtype=output.dtype).view(out.shape))

        return Work(run, f"streams-alltoall-{round_id}")

    def shutdown(self) -> None:
        self.mesh.close()


def open_streams_group(store: dist.Store, quorum_id: int, rank: int, members: tuple[int, ...], host: str,
                       config: TransportConfig, first_round: int, timeout_s: float) -> StreamsGroup:
    """The quorum's mesh (module docstring); ``timeout_s`` bounds the wait for the peers' addresses."""
    listener = listen(host, window_bytes=config.window_bytes)
    try:
        key = f"q{quorum_id}/streams/"
        store.set(f"{key}{rank}", f"{host}:{listener.getsockname()[1]}")
        keys = [f"{key}{k}" for k in range(len(members))]
        store.wait(keys, timedelta(seconds=timeout_s))
        addresses = [store.get(k).decode() for k in keys]
        mesh = Mesh.open(rank, addresses, listener, list(members), config)
    finally:
        listener.close()
    return StreamsGroup(mesh, first_round)
