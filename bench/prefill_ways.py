"""The two ways a prefill's products can share the threads (``engine/cpu/prefill_path.py``: the
columns, each product as ``ProductChooser`` timed it alone, or the rows, every product in the
kernels' panels), timed on whole prefills in one engine, in alternating pairs: SmolLM2-135M
float32, one prompt of ``--tokens`` random tokens at a time, 2 threads.

    .venv/bin/python bench/prefill_ways.py --isa avx512 --tokens 100 --pairs 30

The engine is built as ``tenacia serve`` builds it except that the race at start is skipped, so
that both ways' layouts stay; each pair runs the two ways in turns (ABBA order), the first pair
warms up and is not counted. Prints the medians and the paired ratio (rows over columns) and
writes bench/results/prefill-ways-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--isa", choices=("avx512", "avx2", "generic"), help="force a kernel build (TENACIA_ISA)")
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.isa:
        os.environ["TENACIA_ISA"] = args.isa

    import torch
    from results_file import write_results

    from tenacia.serve.config import EngineConfig
    from tenacia.serve.engine.cpu import prefill_path
    from tenacia.serve.engine.cpu.host import keep_freed_memory
    from tenacia.serve.engine.llm_engine import LLMEngine
    from tenacia.serve.engine.sequence import SamplingParams
    from tenacia.serve.models import load_model

    prefill_path.choose = lambda model, clock=None: "not raced (bench/prefill_ways.py)"
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    served = load_model("smollm2", torch.device("cpu"), torch.float32)
    engine = LLMEngine(served.model, served.tokenizer, eos_ids=served.eos_ids,
                       cfg=EngineConfig(prefix_caching=False), device=torch.device("cpu"))
    kernels, products = engine.backend.describe()
    print(f"kernels {kernels}; products {products}", flush=True)
    ways = prefill_path.Ways(engine.runner.model)
    names = [prefill_path.AS_TIMED, prefill_path.ROWS]
    rng = random.Random(0)
    times: dict[str, list[float]] = {n: [] for n in names}
    start = time.strftime("%H:%M:%S", time.gmtime())
    for i in range(args.pairs + 1):
        for name in names if i % 2 == 0 else names[::-1]:
            ways.arrange(name)
            engine.add_request(f"r{i}-{name}", [rng.randrange(100, 40000) for _ in range(args.tokens)],
                               SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True))
            t = time.perf_counter()
            engine.step()
            if i:
                times[name].append(round((time.perf_counter() - t) * 1e3, 3))
    ratios = [r / c for r, c in zip(times[names[1]], times[names[0]], strict=True)]
    medians = {n: round(statistics.median(v), 2) for n, v in times.items()}
    summary = {"ratio_median": round(statistics.median(ratios), 4), "rows_faster": sum(r < 1 for r in ratios),
               "pairs": len(ratios)}
    print(f"{args.tokens} tokens, medians ms {medians}; rows over columns, paired: median {summary['ratio_median']}, "
          f"rows faster in {summary['rows_faster']} of {len(ratios)}")
    path = write_results("prefill-ways", {"setup": vars(args), "utc": [start, time.strftime("%H:%M:%S", time.gmtime())],
                                          "kernels": kernels, "products": products, "medians_ms": medians,
                                          "paired": summary, "each_ms": times})
    print(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
