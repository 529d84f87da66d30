"""The serving engine alone, in-process (no HTTP): SmolLM2-135M-Instruct in float32, one burst of
``--seqs`` prompts of ``--prompt-tokens`` random tokens prefilled in one step, then decoded
together. Prints a table and writes bench/results/serve-engine-<time>.json:

    .venv/bin/python bench/serve_engine.py                         # as `tenacia serve` runs it
    .venv/bin/python bench/serve_engine.py --no-keep-freed-memory  # glibc's allocator defaults
    .venv/bin/python bench/serve_engine.py --no-huge-pages         # 4 KiB pages (host.py)

This is where the per-change figures of docs/serving.md ("Speed") come from: a prefill of 16 x 100
tokens and a decode step of 16 sequences, each repeated ``--rounds`` times.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tenacia.serve.engine.cpu.host import HUGE_PAGES_ENV, huge_pages_in_use  # noqa: E402  (imports no torch)

if "--no-huge-pages" not in sys.argv:  # as `tenacia serve` starts its engine process: before torch
    os.environ.update(HUGE_PAGES_ENV)
import torch  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seqs", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=100)
    p.add_argument("--decode-steps", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-keep-freed-memory", action="store_true")
    p.add_argument("--no-huge-pages", action="store_true")
    p.add_argument("--no-decode-kernels", action="store_true", help="torch ops and MKL alone (decode_kernels.py)")
    args = p.parse_args()

    from tenacia.serve.config import EngineConfig
    from tenacia.serve.engine.cpu.host import keep_freed_memory
    from tenacia.serve.engine.llm_engine import LLMEngine
    from tenacia.serve.engine.sequence import SamplingParams
    from tenacia.serve.models import load_model

    torch.set_num_threads(args.threads)
    if not args.no_keep_freed_memory:
        keep_freed_memory()
    served = load_model("smollm2", torch.device("cpu"), torch.float32)
    engine = LLMEngine(served.model, served.tokenizer, eos_ids=served.eos_ids,
                       cfg=EngineConfig(prefix_caching=False, decode_kernels=not args.no_decode_kernels),
                       device=torch.device("cpu"))
    rng = random.Random(0)
    single, burst, decode = [], [], []
    for r in range(args.rounds + 1):  # round 0 warms up
        engine.add_request(f"one{r}", [rng.randrange(100, 40000) for _ in range(args.prompt_tokens)],
                           SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True))
        t = time.perf_counter()
        engine.step()
        single.append(time.perf_counter() - t)
        for i in range(args.seqs):
            engine.add_request(f"b{r}-{i}", [rng.randrange(100, 40000) for _ in range(args.prompt_tokens)],
                               SamplingParams(max_tokens=args.decode_steps + 1, temperature=0.0, ignore_eos=True))
        t = time.perf_counter()
        engine.step()
        burst.append(time.perf_counter() - t)
        while engine.has_work():
            t = time.perf_counter()
            engine.step()
            decode.append(time.perf_counter() - t)
    ms = lambda xs: round(statistics.median(xs) * 1000, 1)  # noqa: E731
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join([".venv/bin/python", *sys.argv]),
              "args": vars(args), "backend": type(engine.backend).__name__,
              "decode_kernels": engine.backend.describe()[0], "products": engine.backend.describe()[1],
              "huge_page_mib": huge_pages_in_use() >> 20,
              f"prefill_1x{args.prompt_tokens}_ms": {"median": ms(single[1:]), "all": [round(x * 1000, 1) for x in single[1:]]},
              f"prefill_{args.seqs}x{args.prompt_tokens}_ms": {"median": ms(burst[1:]), "all": [round(x * 1000, 1) for x in burst[1:]]},
              f"decode_step_{args.seqs}_seqs_ms": {"median": ms(decode[len(decode) // (args.rounds + 1):])}}
    out = ROOT / "bench" / "results" / f"serve-engine-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| measure | median ms | rounds |\n|---|---|---|")
    for key in list(result)[6:]:
        print(f"| {key} | {result[key]['median']} | {result[key].get('all', '')} |")
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
