"""How fast a decode step could be on this machine: its floors, measured in the same run.

A decode step of B sequences reads every weight of the layers and of the output projection once
and each sequence's cached keys and values, and does 2 x (those weights) x B floating-point
operations. Its memory floor is those bytes over the machine's read bandwidth (the fastest of a
few sums of 1 GiB of float32, all threads); its compute floor is those operations over the
machine's float32 matrix-product rate (the fastest of many 1,024 x 576 x 1,536 products, all
threads, on weights already in cache, in oneDNN's layout where torch has it, else MKL's: the
fastest the machine was seen to multiply). `bench/serve.py` measures both at the start of a run,
after each round and at the end, and keeps the fastest: a shared machine only ever makes them look
slower. A step can be no faster than the larger of the two;
`bench/serve.py` reports each engine's time per output token against them.
"""

from __future__ import annotations

import time

from tenacia.shape import ModelConfig


def _fastest(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def machine_rates(threads: int, repeats: int = 20) -> dict:
    """Read bandwidth (GB/s) and float32 matrix-product rate (GFLOP/s) of this machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.ones(1 << 28)  # 1 GiB
        read = x.numel() * 4 / _fastest(x.sum, repeats) / 1e9
        del x
        a, w = torch.randn(1024, 576), torch.randn(1536, 576)
        product = lambda: torch.nn.functional.linear(a, w)  # noqa: E731
        if torch.backends.mkldnn.is_available():
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 1024)
            product = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")  # noqa: E731
        flops = 2 * 1024 * 576 * 1536 / _fastest(product, repeats) / 1e9
    finally:
        torch.set_num_threads(before)
    return {"read_GBps": round(read, 1), "matmul_GFLOPs": round(flops, 1)}


def decode_floors(cfg: ModelConfig, sequences: int, context: int, rates: dict) -> dict:
    """Floors (ms) of one decode step of ``sequences`` sequences of ``context`` tokens each, in
    float32, for the model shape ``cfg``."""
    hd = cfg.head_dim
    per_layer = cfg.dim * hd * (2 * cfg.n_heads + 2 * cfg.n_kv_heads) + 3 * cfg.dim * cfg.ffn_dim
    weights = cfg.n_layers * per_layer + cfg.vocab_size * cfg.dim  # the output projection too
    kv = sequences * context * cfg.n_layers * 2 * cfg.n_kv_heads * hd
    memory_ms = (weights + kv) * 4 / (rates["read_GBps"] * 1e9) * 1e3
    compute_ms = 2 * weights * sequences / (rates["matmul_GFLOPs"] * 1e9) * 1e3
    return {"memory_ms": round(memory_ms, 1), "compute_ms": round(compute_ms, 1),
            "floor_ms": round(max(memory_ms, compute_ms), 1)}
