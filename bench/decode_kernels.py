"""The decode kernels (tenacia/serve/engine/cpu/kernels*.c), every build this CPU runs,
against what they replace, alone: SmolLM2-135M's 30 layers of projections (random float32 weights
of its shapes, 424 MB, each layer's its own so that they stream from memory as in a decode step)
for a few rows, MKL's packed GEMM against each build's small GEMM; and attention of 16 sequences
over their keys, torch's SDPA on the padded mirror against each build's decode_attention. Also the
machine's read bandwidth (a 1 GiB sum), to read the products against. Prints a table and writes
bench/results/decode-kernels-<time>.json:

    .venv/bin/python bench/decode_kernels.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tenacia.serve.engine.cpu.host import HUGE_PAGES_ENV  # noqa: E402  (imports no torch)

os.environ.update(HUGE_PAGES_ENV)  # as the engine process runs: large buffers on huge pages (host.py)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

from tenacia.device import cpu_model  # noqa: E402
from tenacia.serve.engine.cpu import build as dk_build  # noqa: E402
from tenacia.serve.engine.cpu import kernels as dk  # noqa: E402
from tenacia.serve.engine.cpu.products import PackedLinear  # noqa: E402

LAYERS = 30
SHAPES = [(960, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]  # qkv, o, gate, up, down


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def run_products(kernels, xs: dict) -> None:
    for layer in kernels:
        for lin in layer:
            lin(xs[lin.in_features])


def run_sdpa(grouped_q, mk: list, mv: list, keys: int, bias) -> None:
    for layer in range(LAYERS):
        k, v = mk[layer % len(mk)], mv[layer % len(mv)]
        F.scaled_dot_product_attention(grouped_q, k[:, :, :keys], v[:, :, :keys], attn_mask=bias)


def run_kernel(kernels, q, mk: list, mv: list, lengths) -> None:
    for layer in range(LAYERS):
        kernels.decode_attention(q, mk[layer % len(mk)], mv[layer % len(mv)], lengths)


def read_bandwidth_gbps(repeats: int = 5) -> float:
    """The machine's read bandwidth: the fastest of ``repeats`` sums of 1 GiB of float32."""
    x = torch.ones(1 << 28)
    best = min(median_ms(x.sum, 1) for _ in range(repeats))
    return round(x.numel() * 4 / best / 1e6, 1)


def products(builds: list, rows_list: list[int], repeats: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    weights = [[torch.randn(*s, generator=gen) for s in SHAPES] for _ in range(LAYERS)]
    arms = {"mkl_packed": [[PackedLinear(w) for w in layer] for layer in weights]}
    for kernels in builds:
        arms[kernels.isa] = [[kernels.small_linear(w) for w in layer] for layer in weights]
    total_bytes = sum(w.numel() * 4 for layer in weights for w in layer)
    out = []
    for rows in rows_list:
        xs = {k: torch.randn(rows, k, generator=gen) for k in (576, 1536)}
        row = {"rows": rows}
        for name, arm in arms.items():
            ms = median_ms(partial(run_products, arm, xs), repeats)
            row[f"{name}_ms"], row[f"{name}_GBps"] = ms, round(total_bytes / ms / 1e6, 1)
        out.append(row)
    return out


def attention(builds: list, repeats: int, seqs: int = 16, keys: int = 130) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    heads, kv_heads, hd, cap = 9, 3, 64, 208
    q = torch.randn(seqs, heads, 1, hd, generator=gen)
    lengths = torch.full((seqs,), keys, dtype=torch.int64)
    bias = torch.zeros(seqs, 1, 1, keys)
    out = []
    for where, distinct in (("from memory (a mirror per layer)", LAYERS), ("in cache (one mirror)", 1)):
        mk = [torch.randn(seqs, kv_heads, cap, hd, generator=gen) for _ in range(distinct)]
        mv = [torch.randn(seqs, kv_heads, cap, hd, generator=gen) for _ in range(distinct)]
        sdpa = partial(run_sdpa, q.reshape(seqs, kv_heads, heads // kv_heads, hd), mk, mv, keys, bias)
        row = {"keys": where, "sdpa_ms": median_ms(sdpa, repeats)}
        for kernels in builds:
            row[f"{kernels.isa}_ms"] = median_ms(partial(run_kernel, kernels, q, mk, mv, lengths), repeats)
        out.append(row)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1,4,16,32", help="rows of the products (comma-separated)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    builds = [dk.Kernels(isa, lib) for isa in dk.ISAS if not isinstance(lib := dk_build.library(isa), str)]
    if not builds:
        print(f"no build of the decode kernels runs here: {dk.available()}")
        return 1
    torch.set_num_threads(args.threads)
    result = {"cpu": cpu_model(), "threads": args.threads, "builds": [k.isa for k in builds],
              "read_GBps": read_bandwidth_gbps(),
              "products_30_layers": products(builds, [int(r) for r in args.rows.split(",")], args.repeats),
              "attention_30_layers_16x130_keys": attention(builds, args.repeats)}
    arms = ["mkl_packed"] + [k.isa for k in builds]
    print(f"{result['cpu']}, {args.threads} threads; read bandwidth {result['read_GBps']} GB/s\n")
    print("| rows | " + " | ".join(f"{a} ms (GB/s)" for a in arms) + " |\n|---|" + "---|" * len(arms))
    for r in result["products_30_layers"]:
        print(f"| {r['rows']} | " + " | ".join(f"{r[a + '_ms']} ({r[a + '_GBps']})" for a in arms) + " |")
    print("\n| keys | SDPA ms | " + " | ".join(f"{k.isa} ms" for k in builds) + " |\n|---|---|" + "---|" * len(builds))
    for r in result["attention_30_layers_16x130_keys"]:
        print(f"| {r['keys']} | {r['sdpa_ms']} | " + " | ".join(str(r[k.isa + '_ms']) for k in builds) + " |")
    out = write_results("decode-kernels", result)
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
