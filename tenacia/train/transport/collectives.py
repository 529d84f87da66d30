"""The transport's collectives as frame plans over an ``Exchange``.

Summation order, the same on every path and every member, so every member gets identical bytes:
element i of the result is ``((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{R-1}[i]`` in the tensor's
dtype, members in rank order (``rank_order_sum``).

Schedule: direct, not a ring. For R members and N bytes:
- small (N <= ``small_bytes``): each member sends its whole input to every peer and sums the R
  inputs itself. One one-way trip (half a round trip); (R-1) N bytes sent per member.
- large: reduce-scatter, then all-gather, both direct. Chunk j (elements [j n/R, (j+1) n/R)) is
  reduced by member j: each member sends chunk j of its input to member j, sums the R copies of
  its own chunk, and sends the sum to every peer. Two one-way trips (one round trip); 2 (R-1)/R N
  bytes sent per member, the bandwidth optimum, spread over R-1 peers and ``streams`` TCP streams
  each. A ring sends the same bytes in 2 (R-1) dependent one-way steps, three round trips for
  R = 4: on a 100 ms link that is 200 ms more per call, and each step's transfer is too small to
  fill the link's bandwidth-delay product.
- all-gather, all-to-all: each member sends its part for each peer to that peer directly (one
  one-way trip); an all-gather is an all-to-all of the same bytes to everyone.
"""

from __future__ import annotations

import socket
from typing import Protocol

import torch

from ..config import TransportConfig
from .exchange import Exchange
from .frames import ALL_GATHER, REDUCE_SCATTER, WHOLE, Header, TransportError


class Mesh(Protocol):
    """What a collective reads of ``mesh.Mesh`` (a protocol: ``mesh.py`` builds on this module and
    is not imported back): this member's rank, the group, the transport's settings and the
    connected streams, by peer rank."""

    rank: int
    members: tuple[int, ...]
    config: TransportConfig
    inbound: dict[int, list[socket.socket]]
    outbound: dict[int, list[socket.socket]]


def rank_order_sum(parts: list[torch.Tensor]) -> torch.Tensor:
    """``((parts[0] + parts[1]) + parts[2]) + ...``, elementwise, in the parts' dtype."""
    acc = parts[0].clone()
    for p in parts[1:]:
        acc.add_(p)
    return acc


def _bytes(t: torch.Tensor) -> memoryview:
    """A view of a contiguous CPU tensor's bytes."""
    return memoryview(t.view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def _exchange(mesh: Mesh, round_id: int, deadline: float) -> Exchange:
    return Exchange(mesh.rank, mesh.members, round_id, deadline, mesh.inbound, mesh.outbound)


def _slot(buf: memoryview, h: Header) -> memoryview:
    if h.total != len(buf) or h.offset + h.length > len(buf):
        raise TransportError(f"round {h.round}: member at rank {h.sender} sent {h.total} bytes where "
                             f"{len(buf)} were expected (tensors differ in size between members)")
    return buf[h.offset:h.offset + h.length]


def allreduce_sum(mesh: Mesh, tensor: torch.Tensor, round_id: int, deadline: float) -> torch.Tensor:
    flat = tensor.detach().reshape(-1).contiguous().cpu()
    if len(mesh.members) == 1:
        return flat.clone().view(tensor.shape).to(tensor.device)
    nbytes = flat.numel() * flat.element_size()
    out = _allreduce_small(mesh, flat, round_id, deadline) if nbytes <= mesh.config.small_bytes \
        else _allreduce_large(mesh, flat, round_id, deadline)
    return out.view(tensor.shape).to(tensor.device)


def _allreduce_small(mesh: Mesh, flat: torch.Tensor, round_id: int, deadline: float) -> torch.Tensor:
    ex = _exchange(mesh, round_id, deadline)
    peers = list(mesh.outbound)
    parts = {k: torch.empty_like(flat) for k in peers}
    views = {k: _bytes(t) for k, t in parts.items()}
    mine = _bytes(flat)
    for k in peers:
        ex.send(k, WHOLE, mine)
        ex.expect(k, [WHOLE])
    ex.run(lambda h: _slot(views[h.sender], h), lambda h: None)
    parts[mesh.rank] = flat
    return rank_order_sum([parts[k] for k in range(len(mesh.members))])


def _allreduce_large(mesh: Mesh, flat: torch.Tensor, round_id: int, deadline: float) -> torch.Tensor:
    ex = _exchange(mesh, round_id, deadline)
    r, world, n = mesh.rank, len(mesh.members), flat.numel()
    bounds = [(j * n // world, (j + 1) * n // world) for j in range(world)]
    peers = list(mesh.outbound)
    lo, hi = bounds[r]
    copies = {k: torch.empty(hi - lo, dtype=flat.dtype) for k in peers}  # chunk r of each peer's input
    copy_views = {k: _bytes(t) for k, t in copies.items()}
    out = torch.empty_like(flat)
    chunk_views = [_bytes(out[a:b]) for a, b in bounds]
    for k in peers:
        a, b = bounds[k]
        ex.send(k, REDUCE_SCATTER, _bytes(flat[a:b]))
        ex.expect(k, [REDUCE_SCATTER, ALL_GATHER])
    left = [len(peers) * mesh.config.streams]  # reduce-scatter frames still to come

    def targets(h: Header) -> memoryview:
        return _slot(copy_views[h.sender] if h.kind == REDUCE_SCATTER else chunk_views[h.sender], h)

    def on_frame(h: Header) -> None:
        if h.kind != REDUCE_SCATTER:
            return
        left[0] -= 1
        if left[0] == 0:  # every copy of chunk r is here: reduce it, send it to every peer
            copies[r] = flat[lo:hi]
            out[lo:hi] = rank_order_sum([copies[k] for k in range(world)])
            for k in peers:
                ex.send(k, ALL_GATHER, chunk_views[r])

    ex.run(targets, on_frame)
    return out


def allgather(mesh: Mesh, data: bytes, round_id: int, deadline: float) -> list[bytes]:
    return alltoall(mesh, [data] * len(mesh.members), round_id, deadline)


def alltoall(mesh: Mesh, parts: list[bytes], round_id: int, deadline: float) -> list[bytes]:
    """``parts[k]`` to member k, directly (one one-way trip); returns what each member sent to this
    one, in rank order (its own part for itself). Sizes may differ."""
    ex = _exchange(mesh, round_id, deadline)
    peers = list(mesh.outbound)
    bufs: dict[int, memoryview] = {}
    for k in peers:
        ex.send(k, WHOLE, memoryview(parts[k]))
        ex.expect(k, [WHOLE])

    def targets(h: Header) -> memoryview:
        if h.sender not in bufs:
            bufs[h.sender] = memoryview(bytearray(h.total))
        return _slot(bufs[h.sender], h)

    ex.run(targets, lambda h: None)
    return [bytes(parts[k]) if k == mesh.rank else bytes(bufs.get(k, b"")) for k in range(len(mesh.members))]
