"""One member of a quorum running the compressed reduce-scatter exchange, for ``test_compressed_reduce.py``.

    compressed_worker.py RANK WORLD STORE_HOST:PORT OUT_DIR

On quorum 1's group (gloo) and quorum 2's (the streams transport), built by ``group.GroupBuilder``
as a replica builds them, runs ``reduce_scatter_compressed`` on every case of ``CASES`` with this
rank's ``inputs`` and saves, per transport and case, the result, the new residual and the sizes of
the buffers the two all-to-alls delivered (``OUT_DIR/RANK.pt``). Then quorums 3 (gloo) and 4
(streams): the last rank exits once both groups are built; the others run the exchange on each and
save the error it raised and how long that took (``OUT_DIR/RANK-lost.pt``).
"""

from __future__ import annotations

import os
import sys
import time

import torch

from tenacia.train.config import TransportConfig
from tenacia.train.replicas.compress import Compressor
from tenacia.train.replicas.compressed_reduce import reduce_scatter_compressed
from tenacia.train.replicas.group import GroupBuilder, all_to_all
from tenacia.train.replicas.timing import Timing

N = 5 * 256 + 37  # 6 blocks of 256, the last partial: chunks of 1, 2, 1, 2 blocks for 4 members
CASES = {"int2": ("int2", 0.0), "int4-topk": ("int4", 0.05)}


def inputs(rank: int) -> tuple[torch.Tensor, float, torch.Tensor]:
    """This rank's pseudo-gradient, token count and residual."""
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(N, generator=g), 1000.0 * (rank + 1), 0.1 * torch.randn(N, generator=g)


def no_wait(done) -> None:
    pass


def no_wake(*_) -> None:
    pass


def group(store: str, quorum: int, rank: int, world: int, streams: bool) -> GroupBuilder:
    b = GroupBuilder(store, quorum, rank, world, "127.0.0.1", timing=Timing(collective_s=20.0),
                     streams=(tuple(range(world)), TransportConfig(streams=2, timeout_s=20.0), 1) if streams else None)
    assert b.done.wait(120) and b.error is None, b.error
    return b


def run(pg, rank: int, quantize: str, topk: float) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    d, tokens, residual = inputs(rank)
    received: list[list[int]] = []

    def exchange(parts, sizes, pg, wait, wake):
        got = all_to_all(parts, sizes, pg, wait, wake)
        received.append([b.numel() for b in got])
        return got

    comp = Compressor(quantize, block=256, topk=topk, error_feedback=True)
    total, new_residual = reduce_scatter_compressed(comp, d, tokens, residual, pg, no_wait, no_wake, exchange)
    return total, new_residual, received


def main() -> None:
    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    results = {}
    for quorum, transport in ((1, "gloo"), (2, "streams")):
        pg = group(store, quorum, rank, world, transport == "streams").pg
        results[transport] = {name: run(pg, rank, *case) for name, case in CASES.items()}
    torch.save(results, os.path.join(out, f"{rank}.pt"))
    groups = {transport: group(store, quorum, rank, world, transport == "streams").pg
              for quorum, transport in ((3, "gloo"), (4, "streams"))}
    if rank == world - 1:
        os._exit(0)  # a member lost as the exchange starts: its connections close with the process
    lost = {}
    for transport, pg in groups.items():
        t0 = time.monotonic()
        try:
            run(pg, rank, "int2", 0.0)
            error = ""
        except Exception as e:  # noqa: BLE001 - what the survivor saw is the result
            error = f"{type(e).__name__}: {e}"
        lost[transport] = {"error": error, "seconds": time.monotonic() - t0}
    torch.save(lost, os.path.join(out, f"{rank}-lost.pt"))
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown with gloo's threads running (streams_worker.py says why)


if __name__ == "__main__":
    main()
