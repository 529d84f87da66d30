"""Builds of the decode kernels side by side in one process, each running SmolLM2-135M's decode
stack (every decoder layer in one call, ``engine/cpu/decode_stack.py``), arms in turns, to tell
apart changes of a few percent on a machine whose speed moves from run to run.

Each ``--arm NAME[@ISA[@REV]]:FLAGS`` is one build, loaded beside the others with its own panels
of the model's weights: the kernels of ISA (default ``--isa``) from this checkout, or from git
revision REV (its ``tenacia/serve/engine/cpu/*.c`` taken with ``git archive`` into a temporary
folder: the kernels as they were, under this checkout's Python), compiled with FLAGS added
(``-D`` settings of the C sources, e.g. ``-DFAR=512``). The first arm, ``base``, is ``--isa``
from this checkout with no flags. So one run can set two instruction sets side by side
(``--arm avx2@avx2:``) or a change against the commit before it (``--arm old@avx512@HEAD~1:``).

A round runs ``--steps`` decode steps of each arm at each batch size in turn, over
``decode_path.CONTEXT`` cached tokens a sequence (``--context`` sets another); the table gives each arm's median step, and the
rate at which the layers' weights streamed (their bytes over the step). ``--cpu-time`` also
gives the process's CPU time per step (both threads; an OpenMP thread waiting at a barrier spins
and counts). ``--stages`` builds every arm with ``-DSTAGE_TIMES`` and prints, per arm and batch,
each stage's time a step on each thread, working and waiting at the stage's barrier (the
timers cost a few microseconds a step). The machine's read rate (``bench/floors.py``) is
measured before and after. Writes bench/results/decode-stack-ab-<time>.json.

    .venv/bin/python bench/decode_stack_ab.py --isa avx512 --arm avx2@avx2: --batches 1,4,16 --cpu-time
    .venv/bin/python bench/decode_stack_ab.py --arm far512:-DFAR=512 --arm old@avx512@HEAD~2:
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from tenacia.serve.engine.cpu.host import HUGE_PAGES_ENV  # noqa: E402  (imports no torch)

os.environ.update(HUGE_PAGES_ENV)  # as the engine process: before torch allocates
import torch  # noqa: E402
from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

KERNELS_DIR = "tenacia/serve/engine/cpu"
STAGES = ("fork", "norm", "transpose", "qkv", "rotary+store", "attention", "wo", "gate_up", "silu", "down")


def parse_arm(spec: str, isa: str) -> tuple[str, str, str | None, tuple[str, ...]]:
    """``NAME[@ISA[@REV]]:FLAGS`` -> (name, isa, revision or None, flags)."""
    head, _, flags = spec.partition(":")
    name, _, rest = head.partition("@")
    arm_isa, _, rev = rest.partition("@")
    return name, arm_isa or isa, rev or None, tuple(flags.split())


def build(cc: str, isa: str, rev: str | None, flags: tuple[str, ...], tmp: Path) -> Path:
    """The shared library of one arm: this checkout's (cached by build.py) or ``rev``'s."""
    from tenacia.serve.engine.cpu import build as dk_build

    if rev is None:
        return dk_build.compile_library(cc, isa, flags)
    where = tmp / rev.replace("/", "_")
    if not where.is_dir():
        where.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, KERNELS_DIR], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    source, isa_flags, _ = dk_build.BUILDS[isa]
    out = where / f"{isa}-{abs(hash(flags))}.so"
    subprocess.run([cc, *dk_build.COMMON, *isa_flags, *flags, str(where / KERNELS_DIR / source.name), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    return out


class _Scratch:
    """``tenacia_decode_stack_scratch`` for a build from before it existed: this checkout's size,
    which is larger than any earlier one."""

    argtypes = restype = None

    def __call__(self, rows, dim, heads, kv_heads, hd, hidden):
        qd, qkvn = heads * hd, (heads + 2 * kv_heads) * hd
        return rows * (2 * dim + qkvn + qd + 3 * hidden + max(dim, qd, hidden)) + 16


class _OldBuild:
    def __init__(self, lib: ctypes.CDLL):
        self._lib, self.tenacia_decode_stack_scratch = lib, _Scratch()

    def __getattr__(self, name: str):
        return getattr(self._lib, name)


def load(path: Path):
    from tenacia.serve.engine.cpu import build as dk_build

    lib = ctypes.CDLL(str(path))
    return lib, dk_build.declare(lib if hasattr(lib, "tenacia_decode_stack_scratch") else _OldBuild(lib))


def stage_table(lib: ctypes.CDLL, threads: int):
    """The stage timers of a -DSTAGE_TIMES build: (reset, read -> {stage: [[work, wait] per thread]})."""
    count = ctypes.c_long.in_dll(lib, "tenacia_stage_count").value
    most = ctypes.c_long.in_dll(lib, "tenacia_stage_threads").value
    array = (ctypes.c_double * (most * count * 2)).in_dll(lib, "tenacia_stage_seconds")

    def reset():
        ctypes.memset(array, 0, ctypes.sizeof(array))

    def read():
        return {STAGES[s] if s < len(STAGES) else str(s): [[array[(t * count + s) * 2], array[(t * count + s) * 2 + 1]]
                                                           for t in range(min(threads, most))] for s in range(count)}
    return reset, read


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", action="append", default=[], help="NAME[@ISA[@REV]]:compiler flags (space-separated)")
    p.add_argument("--isa", default="avx512", choices=("avx512", "avx2", "generic"))
    p.add_argument("--batches", default="1,16")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cpu-time", action="store_true", help="also the process CPU time per step")
    p.add_argument("--stages", action="store_true", help="build with -DSTAGE_TIMES; per-stage times per thread")
    p.add_argument("--context", type=int, help="cached tokens a sequence (default decode_path.CONTEXT, 100)")
    args = p.parse_args()

    from floors import machine_rates

    from tenacia.serve.engine.cpu import kernels as dk
    from tenacia.serve.engine.cpu.backend import KernelBackend
    from tenacia.serve.engine.cpu.decode_path import DecodeSteps
    from tenacia.serve.engine.cpu.host import keep_freed_memory
    from tenacia.serve.engine.packed import PackedLlama
    from tenacia.serve.models import load_model

    if args.context:
        from tenacia.serve.engine.cpu import decode_path
        decode_path.CONTEXT = args.context  # read by DecodeSteps when it builds each batch's cache
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    batches = tuple(int(b) for b in args.batches.split(","))
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    served = load_model("smollm2", torch.device("cpu"), torch.float32)
    arms, specs = {}, {}
    with tempfile.TemporaryDirectory(prefix="decode-stack-ab-") as tmp:
        for spec in ["base:"] + args.arm:
            name, isa, rev, flags = parse_arm(spec, args.isa)
            flags += ("-DSTAGE_TIMES",) if args.stages else ()
            raw, lib = load(build(cc, isa, rev, flags, Path(tmp)))
            model = PackedLlama(served.model, KernelBackend(dk.Kernels(isa, lib), None))
            assert model.decode_stack is not None, model.backend.describe()
            stages = stage_table(raw, args.threads) if args.stages and hasattr(raw, "tenacia_stage_count") else None
            arms[name] = (DecodeSteps(model, batches), stages)
            specs[name] = {"isa": isa, "revision": rev, "flags": " ".join(flags)}
    layer_bytes = sum(getattr(layer, n).small.panels.numel() * 4 for layer in model.layers
                      for n in ("qkv", "wo", "gate_up", "down"))
    rates_before = machine_rates(args.threads)
    times = {name: {b: [] for b in batches} for name in arms}
    cpu = {name: {b: [] for b in batches} for name in arms}
    staged = {name: {b: None for b in batches} for name in arms}
    for r in range(args.rounds + 1):  # round 0 warms up
        for b in batches:
            for name, (steps, stages) in arms.items():
                if stages:
                    stages[0]()
                c, t = time.process_time(), time.perf_counter()
                for _ in range(args.steps):
                    steps.run(b)
                times[name][b].append((time.perf_counter() - t) / args.steps)
                cpu[name][b].append((time.process_time() - c) / args.steps)
                if stages and r >= 1:  # this batch's steps of the timed rounds, summed
                    got = stages[1]()
                    old = staged[name][b]
                    staged[name][b] = got if old is None else {
                        s: [[x + y for x, y in zip(a, c, strict=True)] for a, c in zip(old[s], got[s], strict=True)]
                        for s in got}
    rates_after = machine_rates(args.threads)

    def med(xs):
        return round(statistics.median(xs[1:]) * 1e3, 2)

    table = {name: {b: med(ts[b]) for b in batches} for name, ts in times.items()}
    cpu_table = {name: {b: med(ts[b]) for b in batches} for name, ts in cpu.items()}
    result = {"isa": args.isa, "threads": args.threads, "layer_weight_MB": round(layer_bytes / 1e6, 1),
              "rates_before": rates_before, "rates_after": rates_after, "median_step_ms": table,
              "all_ms": {name: {b: [round(t * 1e3, 2) for t in ts[b][1:]] for b in batches} for name, ts in times.items()},
              "arms": specs, "context": args.context or 100}
    if args.cpu_time:
        result["median_cpu_ms_per_step"] = cpu_table
    out_stages = {}
    if args.stages:
        steps_timed = args.rounds * args.steps
        for name in (name for name in arms if arms[name][1] is not None):  # builds with the timers
            out_stages[name] = {b: {stage: [[round(v / steps_timed * 1e3, 3) for v in pair] for pair in per_thread]
                                    for stage, per_thread in staged[name][b].items()} for b in batches}
        result["stage_ms_per_step"] = out_stages
    out = write_results("decode-stack-ab", result)
    print(f"read {rates_before['read_GBps']} / {rates_after['read_GBps']} GB/s before / after; "
          f"layers' weights {layer_bytes / 1e6:.1f} MB; {args.threads} threads")
    print("| arm | isa@revision flags | " + " | ".join(f"{b} seqs: ms (GB/s)" for b in batches) + " |")
    print("|---|---|" + "---|" * len(batches))
    for name, row in table.items():
        cells = [f"{row[b]} ({layer_bytes / row[b] / 1e6:.1f})" + (f", cpu {cpu_table[name][b]}" if args.cpu_time else "")
                 for b in batches]
        s = specs[name]
        print(f"| {name} | {s['isa']}@{s['revision'] or 'here'} {s['flags'] or '-'} | " + " | ".join(cells) + " |")
    for name, per_batch in out_stages.items():
        for b, stages in per_batch.items():
            print(f"\n{name}, {b} seqs, ms a step per thread (work / wait):")
            for stage, pairs in stages.items():
                print(f"  {stage:13s} " + "  ".join(f"t{t}: {w:7.3f} / {x:7.3f}" for t, (w, x) in enumerate(pairs)))
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
