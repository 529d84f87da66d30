"""Builds of the decode kernels side by side in one process, each running SmolLM2-135M's decode
stack (every decoder layer in one call, ``engine/cpu/decode_stack.py``), arms in turns, to tell
apart changes of a few percent on a machine whose speed moves from run to run.

Each ``--arm name:FLAGS`` is the kernels of ``--isa`` compiled with FLAGS added (``-D`` settings
of the C sources, e.g. ``-DFAR=512``; the first arm, ``base``, adds none), loaded beside the
others, with its own panels of the model's weights. A round runs ``--steps`` decode steps of
each arm at each batch size in turn, over ``decode_path.CONTEXT`` cached tokens a sequence; the
table gives each arm's median step, and the rate at which the layers' weights streamed (their
bytes over the step). The machine's read rate (``bench/floors.py``) is measured before and
after. Writes bench/results/decode-stack-ab-<time>.json.

    .venv/bin/python bench/decode_stack_ab.py --arm far512:-DFAR=512 --arm far2048:-DFAR=2048
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from tenacia.serve.engine.cpu.host import HUGE_PAGES_ENV  # noqa: E402  (imports no torch)

os.environ.update(HUGE_PAGES_ENV)  # as the engine process: before torch allocates
import torch  # noqa: E402
from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", action="append", default=[], help="name:compiler flags (space-separated)")
    p.add_argument("--isa", default="avx512", choices=("avx512", "avx2", "generic"))
    p.add_argument("--batches", default="1,16")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import ctypes

    from floors import machine_rates

    from tenacia.serve.engine.cpu import kernels as dk
    from tenacia.serve.engine.cpu.backend import KernelBackend
    from tenacia.serve.engine.cpu.decode_path import DecodeSteps
    from tenacia.serve.engine.cpu.host import keep_freed_memory
    from tenacia.serve.engine.packed import PackedLlama
    from tenacia.serve.models import load_model

    torch.set_num_threads(args.threads)
    keep_freed_memory()
    batches = tuple(int(b) for b in args.batches.split(","))
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    served = load_model("smollm2", torch.device("cpu"), torch.float32)
    arms = {}
    for spec in ["base:"] + args.arm:
        name, _, flags = spec.partition(":")
        lib = dk.declare(ctypes.CDLL(str(dk._compile(cc, args.isa, tuple(flags.split())))))
        model = PackedLlama(served.model, KernelBackend(dk.Kernels(args.isa, lib), None))
        assert model.decode_stack is not None, model.backend.describe()
        arms[name] = (flags, DecodeSteps(model, batches))
    layer_bytes = sum(getattr(layer, n).small.panels.numel() * 4 for layer in model.layers
                      for n in ("qkv", "wo", "gate_up", "down"))
    rates_before = machine_rates(args.threads)
    times = {name: {b: [] for b in batches} for name in arms}
    for _ in range(args.rounds + 1):  # round 0 warms up
        for b in batches:
            for name, (_, steps) in arms.items():
                t = time.perf_counter()
                for _ in range(args.steps):
                    steps.run(b)
                times[name][b].append((time.perf_counter() - t) / args.steps)
    rates_after = machine_rates(args.threads)
    table = {name: {b: round(statistics.median(ts[b][1:]) * 1e3, 2) for b in batches} for name, ts in times.items()}
    result = {"isa": args.isa, "layer_weight_MB": round(layer_bytes / 1e6, 1), "rates_before": rates_before,
              "rates_after": rates_after, "median_step_ms": table,
              "all_ms": {name: {b: [round(t * 1e3, 2) for t in ts[b][1:]] for b in batches} for name, ts in times.items()},
              "flags": {name: flags for name, (flags, _) in arms.items()}}
    out = write_results("decode-stack-ab", result)
    print(f"read {rates_before['read_GBps']} / {rates_after['read_GBps']} GB/s before / after; "
          f"layers' weights {layer_bytes / 1e6:.1f} MB")
    print("| arm | flags | " + " | ".join(f"{b} seqs: ms (GB/s)" for b in batches) + " |")
    print("|---|---|" + "---|" * len(batches))
    for name, row in table.items():
        cells = [f"{row[b]} ({layer_bytes / row[b] / 1e6:.1f})" for b in batches]
        print(f"| {name} | {arms[name][0] or '-'} | " + " | ".join(cells) + " |")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
