"""One rank of an R-rank collective, driven line by line from stdin (a test and bench helper).

    collective_worker.py --rank R --world W --host ADDR --backend gloo|tenacia [--streams S]

1. It listens and prints ``listen <port>`` (gloo: rank 0's TCPStore, the others 0; tenacia: its
   own transport listener).
2. It reads ``peers HOST:PORT,...`` (one per rank), connects, prints ``ready``.
3. Each command answers one JSON line:
   - ``allreduce BYTES N [SEED]``: N timed all-reduces (sum) of a float32 tensor of BYTES bytes,
     rank k's holding ``randn`` drawn with seed SEED + k -> {"times_s", "median_s", "sha256",
     "exact"}; ``exact``: the result equals, bit for bit, the local sum of all W tensors in rank
     order (rank 0 + rank 1 + ...), which this worker computes itself.
   - ``allgather BYTES N`` (tenacia only): N all-gathers of BYTES bytes -> {"median_s", "ok"}
   - ``exit``
   A command that fails answers {"error": "<type>: <message>"}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from datetime import timedelta

import torch


def tensors(world: int, numel: int, seed: int) -> list[torch.Tensor]:
    return [torch.randn(numel, generator=torch.Generator().manual_seed(seed + k)) for k in range(world)]


def rank_order_sum(parts: list[torch.Tensor]) -> torch.Tensor:
    acc = parts[0].clone()
    for p in parts[1:]:
        acc.add_(p)
    return acc


class Gloo:
    def __init__(self, args: argparse.Namespace):
        import torch.distributed as dist

        self.dist, self.args = dist, args
        self.store = None
        if args.rank == 0:
            self.store = dist.TCPStore(args.host, 0, args.world, is_master=True, timeout=timedelta(seconds=60),
                                       wait_for_workers=False)
        self.port = self.store.port if self.store is not None else 0

    def connect(self, peers: list[str]) -> None:
        dist, args = self.dist, self.args
        if self.store is None:
            host, port = peers[0].rsplit(":", 1)
            self.store = dist.TCPStore(host, int(port), args.world, is_master=False, timeout=timedelta(seconds=60))
        self.pg = dist.ProcessGroupGloo(self.store, args.rank, args.world, timedelta(seconds=args.timeout))

    def allreduce(self, x: torch.Tensor) -> torch.Tensor:
        self.pg.allreduce([x]).wait()
        return x


class Tenacia:
    def __init__(self, args: argparse.Namespace):
        from tenacia.train.transport import TransportConfig, listen

        self.args = args
        self.listener = listen(args.host)
        self.port = self.listener.getsockname()[1]
        self.config = TransportConfig(streams=args.streams, window_bytes=args.window, timeout_s=args.timeout)
        self.round = 0

    def connect(self, peers: list[str]) -> None:
        from tenacia.train.transport import Mesh

        self.mesh = Mesh.open(self.args.rank, peers, self.listener, list(range(len(peers))), self.config)

    def allreduce(self, x: torch.Tensor) -> torch.Tensor:
        self.round += 1
        return self.mesh.allreduce_sum(x, self.round)

    def allgather(self, data: bytes) -> list[bytes]:
        self.round += 1
        return self.mesh.allgather(data, self.round)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--backend", choices=("gloo", "tenacia"), default="gloo")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    backend = (Gloo if args.backend == "gloo" else Tenacia)(args)
    print(f"listen {backend.port}", flush=True)
    word, peers = sys.stdin.readline().split()
    backend.connect(peers.split(","))
    print("ready", flush=True)
    for line in sys.stdin:
        word, *rest = line.split()
        if word == "exit":
            break
        try:
            answer = run(backend, args, word, rest)
        except Exception as e:  # noqa: BLE001 - the driver asserts on what failed
            answer = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)


def run(backend, args: argparse.Namespace, word: str, rest: list[str]) -> dict:
    nbytes, n = int(rest[0]), int(rest[1])
    if word == "allgather":
        times, ok = [], True
        for i in range(n):
            mine = bytes([(args.rank + i) % 256]) * (nbytes + args.rank)
            t = time.perf_counter()
            got = backend.allgather(mine)
            times.append(time.perf_counter() - t)
            ok &= got == [bytes([(k + i) % 256]) * (nbytes + k) for k in range(args.world)]
        return {"times_s": times, "median_s": statistics.median(times), "ok": ok}
    seed = int(rest[2]) if len(rest) > 2 else 0
    parts = tensors(args.world, max(1, nbytes // 4), seed)
    times = []
    for _ in range(n):
        x = parts[args.rank].clone()
        t = time.perf_counter()
        out = backend.allreduce(x)
        times.append(time.perf_counter() - t)
    digest = hashlib.sha256(out.numpy().tobytes()).hexdigest()
    exact = out.numpy().tobytes() == rank_order_sum(parts).numpy().tobytes()
    return {"times_s": times, "median_s": statistics.median(times), "sha256": digest, "exact": exact}


if __name__ == "__main__":
    main()
