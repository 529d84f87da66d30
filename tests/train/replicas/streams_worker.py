"""One member of a quorum's group, on gloo and on the long-link transport, for ``test_streams_group.py``.

    streams_worker.py RANK WORLD STORE_HOST:PORT OUT_DIR

Builds the group of quorum 1 with gloo and of quorum 2 with the streams transport
(``group.GroupBuilder``, as a replica does) and makes on each the calls the sync strategies make
(``group.collect`` of an all-reduce, ``group.gloo_all_gather``):
- ``hand``: ``[t d, t]`` with ``d = [k + 1, -2 (k + 1), k / 2]`` and ``t = k + 1`` on rank k
  (integers and halves: every sum is exact in float32, whatever its order);
- ``randn``: 1000 values drawn with seed k (sums of these depend on the order);
- ``gather``: 8 bytes of value k + 1.
Saves ``OUT_DIR/RANK.pt``. Then quorum 3, streams again: the last rank exits once the group is
built; the others start an all-reduce and save ``OUT_DIR/RANK-lost.pt``: the error it raised.
"""

from __future__ import annotations

import os
import sys
import time

import torch

from tenacia.train.config import TransportConfig
from tenacia.train.replicas.group import GroupBuilder, collect, gloo_all_gather
from tenacia.train.replicas.timing import Timing


def no_wait(done) -> None:
    pass


def no_wake(*_) -> None:
    pass


def calls(pg, rank: int) -> dict[str, object]:
    k = float(rank)
    hand = torch.tensor([(k + 1) * (k + 1), (k + 1) * -2 * (k + 1), (k + 1) * k / 2, k + 1])
    collect(pg.allreduce([hand]), no_wait, no_wake)
    randn = torch.randn(1000, generator=torch.Generator().manual_seed(rank))
    collect(pg.allreduce([randn]), no_wait, no_wake)
    gathered = gloo_all_gather(torch.full((8,), rank + 1, dtype=torch.uint8), pg, no_wait, no_wake)
    return {"hand": hand, "randn": randn, "gather": gathered}


def group(store: str, quorum: int, rank: int, world: int, streams: bool) -> GroupBuilder:
    config = TransportConfig(streams=2, timeout_s=60.0)
    b = GroupBuilder(store, quorum, rank, world, "127.0.0.1", timing=Timing(),
                     streams=(tuple(range(world)), config, 1) if streams else None)
    assert b.done.wait(120) and b.error is None, b.error
    return b


def main() -> None:
    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    results = {name: calls(group(store, q, rank, world, streams).pg, rank)
               for q, name, streams in ((1, "gloo", False), (2, "streams", True))}
    torch.save(results, os.path.join(out, f"{rank}.pt"))
    lost = group(store, 3, rank, world, True)
    if rank == world - 1:
        os._exit(0)  # a member lost as the exchange starts: its streams close with the process
    t0 = time.monotonic()
    try:
        collect(lost.pg.allreduce([torch.ones(100_000)]), no_wait, no_wake)
        error = ""
    except Exception as e:  # noqa: BLE001 - what the survivor saw is the result
        error = f"{type(e).__name__}: {e}"
    torch.save({"error": error, "seconds": time.monotonic() - t0}, os.path.join(out, f"{rank}-lost.pt"))
    sys.stdout.flush()
    # no interpreter teardown: it destroyed the gloo groups with their threads still running, and
    # one in many runs ended in C++'s "terminate called without an active exception" (CI)
    os._exit(0)


if __name__ == "__main__":
    main()
