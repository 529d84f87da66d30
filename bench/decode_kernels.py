"""The decode kernels (tenacia/serve/engine/decode_kernels.c) against what they replace, alone:
SmolLM2-135M's 30 layers of projections (random float32 weights of its shapes, 424 MB, each
layer's its own so that they stream from memory as in a decode step) for a few rows, MKL's packed
GEMM against the small GEMM; and attention of 16 sequences over their keys, torch's SDPA on the
padded mirror against decode_attention. Prints a table and writes
bench/results/decode-kernels-<time>.json:

    .venv/bin/python bench/decode_kernels.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tenacia.serve.engine.host import HUGE_PAGES_ENV  # noqa: E402  (imports no torch)

os.environ.update(HUGE_PAGES_ENV)  # as the engine process runs: large buffers on huge pages (host.py)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tenacia.serve.engine import decode_kernels as dk  # noqa: E402
from tenacia.serve.engine.packed import PackedLinear  # noqa: E402

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


def run_kernel(q, mk: list, mv: list, lengths) -> None:
    for layer in range(LAYERS):
        dk.decode_attention(q, mk[layer % len(mk)], mv[layer % len(mv)], lengths)


def products(rows_list: list[int], repeats: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    weights = [[torch.randn(*s, generator=gen) for s in SHAPES] for _ in range(LAYERS)]
    mkl = [[PackedLinear(w) for w in layer] for layer in weights]
    small = [[dk.SmallLinear(w) for w in layer] for layer in weights]
    total_bytes = sum(w.numel() * 4 for layer in weights for w in layer)
    out = []
    for rows in rows_list:
        xs = {k: torch.randn(rows, k, generator=gen) for k in (576, 1536)}
        a, b = median_ms(partial(run_products, mkl, xs), repeats), median_ms(partial(run_products, small, xs), repeats)
        out.append({"rows": rows, "mkl_packed_ms": a, "small_gemm_ms": b,
                    "mkl_GBps": round(total_bytes / a / 1e6, 1), "small_GBps": round(total_bytes / b / 1e6, 1)})
    return out


def attention(repeats: int, seqs: int = 16, keys: int = 130) -> list[dict]:
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
        kernel = partial(run_kernel, q, mk, mv, lengths)
        out.append({"keys": where, "sdpa_ms": median_ms(sdpa, repeats), "decode_attention_ms": median_ms(kernel, repeats)})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1,4,16,32", help="rows of the products (comma-separated)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if (why := dk.available()) is not None:
        print(f"decode kernels unavailable here: {why}")
        return 1
    torch.set_num_threads(args.threads)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join([".venv/bin/python", *sys.argv]),
              "threads": args.threads, "products_30_layers": products([int(r) for r in args.rows.split(",")], args.repeats),
              "attention_30_layers_16x130_keys": attention(args.repeats)}
    print("| rows | MKL packed ms | small GEMM ms | MKL GB/s | small GB/s |\n|---|---|---|---|---|")
    for r in result["products_30_layers"]:
        print(f"| {r['rows']} | {r['mkl_packed_ms']} | {r['small_gemm_ms']} | {r['mkl_GBps']} | {r['small_GBps']} |")
    print("\n| keys | SDPA ms | decode_attention ms |\n|---|---|---|")
    for r in result["attention_30_layers_16x130_keys"]:
        print(f"| {r['keys']} | {r['sdpa_ms']} | {r['decode_attention_ms']} |")
    out = ROOT / "bench" / "results" / f"decode-kernels-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
