"""A transport for long links: all-reduce, all-gather and all-to-all over several TCP streams per peer.

Stock gloo keeps one TCP connection per peer and runs a ring: on a long, fat link it pays
2 (R-1) one-way steps per all-reduce and keeps too little data in flight to fill the link
(measured in docs/benchmarks.md, "Transport"). Here:
- ``streams`` TCP streams to each peer, with socket buffers sized to the link's
  bandwidth-delay product (``window_for``) or left to the kernel's autotuning;
- a direct reduce-scatter + all-gather (one round trip per large all-reduce, half a round trip
  for a small one; ``collectives.py`` says why not a ring);
- the control header (round id, member list) in every frame, so no round trip is spent agreeing
  on them (``frames.py``);
- results bit-identical on every member: a fixed summation order (``rank_order_sum``);
- a dead, frozen or cut-off peer makes the call raise ``TransportError`` (at once when its
  streams close, else at ``timeout_s``), never hang.

The seam for a sync strategy:

    listener = listen(my_host)                    # publish f"{my_host}:{listener.getsockname()[1]}"
    mesh = Mesh.open(rank, addresses, listener, members, TransportConfig(streams=4))
    total = mesh.allreduce_sum(tensor, round_id)  # same shape and dtype on every member
    blobs = mesh.allgather(data, round_id)        # bytes of every member, in rank order
    blobs = mesh.alltoall(parts, round_id)        # parts[k] to member k; what each sent here, in rank order
    mesh.close()                                  # or on a membership change: a new mesh

Tensors are moved through host memory (a non-CPU tensor is copied to the CPU and back).
"""

from ..config import TransportConfig
from .collectives import rank_order_sum
from .frames import TransportError, window_for
from .mesh import Mesh, listen

__all__ = ["Mesh", "TransportConfig", "TransportError", "listen", "rank_order_sum", "window_for"]
