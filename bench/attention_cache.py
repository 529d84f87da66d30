"""How much of a decode step's attention is waiting on memory: the kernels' decode attention
(``Kernels.decode_attention``, the tasks the decode stack runs) over SmolLM2-135M's shape (16
sequences, 9 query heads on 3 key/value heads of 64) with ``--context`` cached keys each, run on
the mirrors of N distinct layers in turn, for N from 1 to the model's 30.

With one layer the keys and values (2.5 MB at 100 keys) stay in the caches between calls: the
attention's own arithmetic. As N grows the layers' mirrors outgrow the last-level cache and every
call reads its keys and values from memory, as a decode step does (each layer's are read once a
step, 74 MB at 100 keys). The table gives the time a layer (the fastest of ``--repeats`` sweeps
over the N layers, each call one fork and join of the OpenMP team), the rate the keys and values
were read at, and the time for all 30 layers at that rate. The machine's read rate
(``bench/floors.py``) is measured before and after. Writes bench/results/attention-cache-<time>.json.

    .venv/bin/python bench/attention_cache.py --isa avx512
    .venv/bin/python bench/attention_cache.py --isa avx2 --context 130
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from tenacia.serve.engine.cpu.host import HUGE_PAGES_ENV  # noqa: E402  (imports no torch)

os.environ.update(HUGE_PAGES_ENV)  # as the engine process: the mirrors on huge pages
import torch  # noqa: E402
from floors import machine_rates  # noqa: E402
from results_file import write_results  # noqa: E402

B, H, KVH, HD, LAYERS = 16, 9, 3, 64, 30  # SmolLM2-135M, a decode step of 16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--isa", default="avx512", choices=("avx512", "avx2", "generic"))
    p.add_argument("--context", type=int, default=100, help="cached keys a sequence")
    p.add_argument("--layers", default="1,2,4,8,16,30", help="how many layers' mirrors a sweep runs over")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    from tenacia.serve.engine.cpu import build
    from tenacia.serve.engine.cpu import kernels as K

    torch.set_num_threads(args.threads)
    lib = build.library(args.isa)
    if isinstance(lib, str):
        raise SystemExit(f"attention_cache: no {args.isa} kernels here: {lib}")
    kernels = K.Kernels(args.isa, lib)
    cap = -(-args.context // 64) * 64
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, 1, HD, generator=gen)
    mirrors = [(torch.randn(B, KVH, cap, HD, generator=gen), torch.randn(B, KVH, cap, HD, generator=gen))
               for _ in range(LAYERS)]
    lengths = torch.full((B,), args.context, dtype=torch.int64)
    layer_bytes = 2 * B * KVH * args.context * HD * 4
    before = machine_rates(args.threads)
    rows = []
    for n in [int(x) for x in args.layers.split(",")]:
        if not 1 <= n <= LAYERS:
            raise SystemExit(f"attention_cache: --layers takes counts from 1 to {LAYERS}, got {n}")
        best = float("inf")
        for _ in range(args.repeats + 1):
            t = time.perf_counter()
            for k, v in mirrors[:n]:
                kernels.decode_attention(q, k, v, lengths)
            best = min(best, time.perf_counter() - t)
        per_layer = best / n
        rows.append({"layers": n, "mirrors_MB": round(n * layer_bytes / 1e6, 1), "ms_a_layer": round(per_layer * 1e3, 4),
                     "read_GBps": round(layer_bytes / per_layer / 1e9, 1),
                     "ms_for_30_layers": round(per_layer * LAYERS * 1e3, 2)})
    after = machine_rates(args.threads)
    print(f"{args.isa}, {B} sequences x {args.context} cached keys, {args.threads} threads; machine read "
          f"{before['read_GBps']} / {after['read_GBps']} GB/s before / after")
    print("| layers swept | their keys and values, MB | ms a layer | GB/s | ms for 30 layers |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layers']} | {r['mirrors_MB']} | {r['ms_a_layer']} | {r['read_GBps']} | {r['ms_for_30_layers']} |")
    path = write_results("attention-cache", {"args": vars(args), "machine_rates": {"before": before, "after": after},
                                             "rows": rows})
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
