"""One rank of a two-host gloo all-reduce, driven line by line from stdin (a test helper).

Rank 0 hosts the TCPStore on port 0 and prints ``port <n>``; every rank then builds a
ProcessGroupGloo and answers each command with one JSON line:
- ``tiny N``: N all-reduces of a 1-element tensor -> {"median_s", "sum"}
- ``bulk BYTES N``: N all-reduces of a float32 tensor of BYTES bytes -> {"median_s", "sum"}
- ``exit``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    store = dist.TCPStore(args.host, args.port, 2, is_master=args.rank == 0,
                          timeout=timedelta(seconds=20), wait_for_workers=False)
    if args.rank == 0:
        print(f"port {store.port}", flush=True)
    pg = dist.ProcessGroupGloo(store, args.rank, 2, timedelta(seconds=20))
    for line in sys.stdin:
        word, *rest = line.split()
        if word == "exit":
            break
        if word == "tiny":
            n, numel = int(rest[0]), 1
        else:
            n, numel = int(rest[1]), int(rest[0]) // 4
        times, total = [], 0.0
        for _ in range(n):
            x = torch.full((numel,), float(args.rank + 1))
            t = time.perf_counter()
            pg.allreduce([x]).wait()
            times.append(time.perf_counter() - t)
            total = float(x[0])
        print(json.dumps({"median_s": statistics.median(times), "sum": total}), flush=True)


if __name__ == "__main__":
    main()
