"""A one-prompt prefill (SmolLM2-135M-Instruct, float32) measured in several fresh engine
processes, to see how much it moves from one process to the next and with what it moves.

Each child process starts as ``tenacia serve``'s engine process does (huge pages asked for before
torch allocates, freed memory kept), builds the engine, then times ``--prefills`` prefills of
``--prompt-tokens`` random tokens (after one warm-up) and, on the same process's weights, the
prefill's products alone (every layer's q/k/v, o, gate, up and down at that many rows, in the
layouts the engine chose) and the same products on weights it allocates afresh in plain layout
(``F.linear``): a process whose products alone are slow on its own weights but not on fresh
ones points at where its weights were placed; one slow on both, at the CPU. Processes run
arm after arm (``--arm name:VAR=value,...``, environment given to the child; the first arm is
always the plain one), and the table gives each process's medians. Writes
bench/results/prefill-spread-<time>.json.

    .venv/bin/python bench/prefill_spread.py --processes 4
    .venv/bin/python bench/prefill_spread.py --processes 3 --arm spin:GOMP_SPINCOUNT=infinite
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> dict:
    sys.path.insert(0, str(ROOT))
    from tenacia.serve.engine.cpu.host import HUGE_PAGES_ENV, huge_pages_in_use

    assert all(os.environ.get(k) == v for k, v in HUGE_PAGES_ENV.items()), "set by the parent"
    import torch
    import torch.nn.functional as F

    from tenacia.serve.config import EngineConfig
    from tenacia.serve.engine.cpu.host import keep_freed_memory
    from tenacia.serve.engine.llm_engine import LLMEngine
    from tenacia.serve.engine.sequence import SamplingParams
    from tenacia.serve.models import load_model

    torch.set_num_threads(args.threads)
    keep_freed_memory()
    t0 = time.perf_counter()
    served = load_model("smollm2", torch.device("cpu"), torch.float32)
    engine = LLMEngine(served.model, served.tokenizer, eos_ids=served.eos_ids,
                       cfg=EngineConfig(prefix_caching=False), device=torch.device("cpu"))
    start_s = time.perf_counter() - t0
    del served
    rng = random.Random(os.getpid())
    prefill = []
    for i in range(args.prefills + 1):
        engine.add_request(f"p{i}", [rng.randrange(100, 40000) for _ in range(args.prompt_tokens)],
                           SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True))
        t = time.perf_counter()
        engine.step()
        prefill.append(time.perf_counter() - t)
        while engine.has_work():
            engine.step()
    model = engine.runner.model
    names = ("qkv", "wo", "gate", "up", "down")
    x = {n: torch.randn(args.prompt_tokens, getattr(model.layers[0], n).in_features) for n in names}
    fresh = {n: torch.randn(getattr(model.layers[0], n).out_features, getattr(model.layers[0], n).in_features)
             for n in names}

    def own() -> None:
        for layer in model.layers:
            for n in names:
                getattr(layer, n)(x[n])

    def plain() -> None:
        for _ in model.layers:
            for n in names:
                F.linear(x[n], fresh[n])

    products, fresh_products = [], []
    with torch.inference_mode():
        own(), plain()
        for _ in range(args.prefills):
            t = time.perf_counter()
            own()
            products.append(time.perf_counter() - t)
            t = time.perf_counter()
            plain()
            fresh_products.append(time.perf_counter() - t)
    ms = lambda xs: round(statistics.median(xs) * 1e3, 1)  # noqa: E731
    return {"pid": os.getpid(), "start_s": round(start_s, 2), "prefill_ms": ms(prefill[1:]),
            "prefill_min_ms": round(min(prefill[1:]) * 1e3, 1), "products_ms": ms(products),
            "fresh_products_ms": ms(fresh_products), "huge_page_mib": huge_pages_in_use() >> 20,
            "backend": " / ".join(engine.backend.describe()),
            "prefill_impls": sorted({f"{n}:{getattr(model.layers[0], n).prefill_impl}" for n in names})}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=4, help="processes per arm")
    p.add_argument("--prefills", type=int, default=9)
    p.add_argument("--prompt-tokens", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arm", action="append", default=[], help="name:VAR=value,VAR=value (environment of the child)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    from tenacia.serve.engine.cpu.host import HUGE_PAGES_ENV

    arms = [("plain", {})]
    for spec in args.arm:
        name, _, assignments = spec.partition(":")
        arms.append((name, dict(a.split("=", 1) for a in assignments.split(",") if a)))
    runs = []
    for i in range(args.processes):
        for name, env in arms:
            cmd = [sys.executable, __file__, "--child", "--prefills", str(args.prefills), "--prompt-tokens",
                   str(args.prompt_tokens), "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **HUGE_PAGES_ENV, **env},
                                  check=False)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            runs.append({"arm": name, "env": env, **json.loads(done.stdout.strip().splitlines()[-1])})
            r = runs[-1]
            print(f"{name} #{i}: prefill {r['prefill_ms']} ms (min {r['prefill_min_ms']}), products {r['products_ms']},"
                  f" fresh products {r['fresh_products_ms']}, huge pages {r['huge_page_mib']} MiB, {r['prefill_impls']}",
                  flush=True)
    from results_file import write_results  # bench/ is on sys.path: this runs as a script

    out = write_results("prefill-spread", {"runs": runs})
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
