"""The ways a prefill's products can share the threads, timed on whole prefills in one engine, in
turns: SmolLM2-135M float32, ``--seqs`` prompts of ``--tokens`` random tokens prefilled together,
2 threads. Each arm is one of
- ``timed``, ``panels``, ``rows``: a short prefill's ways (``engine/cpu/prefill_path.py``: each
  product as ``ProductChooser`` timed it alone, every product in the kernels' panels with their
  columns shared, or with the rows shared);
- ``long-<impl>``: every product of a long prefill (more than ``products.LONG_FROM`` rows) in one
  layout, ``kernel``, ``kernel-rows``, ``onednn``, ``mkl-packed`` (``engine/cpu/products.py``).

    .venv/bin/python bench/prefill_ways.py --isa avx512 --tokens 100 --pairs 30
    .venv/bin/python bench/prefill_ways.py --isa avx512 --seqs 16 --pairs 5 \
        --arms long-kernel,long-onednn,long-mkl-packed,long-kernel-rows

The engine is built as ``tenacia serve`` builds it (bench/inprocess_engine.py) except that the race at start is skipped and
no layout is freed, so that every arm's layouts stay; each round runs the arms in turns (in
reverse order every other round), the first round warms up and is not counted. Prints each arm's
median and its paired ratio over the first arm, and writes bench/results/prefill-ways-<time>.json.
"""

from __future__ import annotations

import random
import statistics
import time

from inprocess_engine import ROOT, parser, prepare, smollm2_engine  # imports no torch


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--seqs", type=int, default=1, help="prompts prefilled together in one step")
    p.add_argument("--pairs", type=int, default=30, help="rounds of every arm (the name kept from two arms)")
    p.add_argument("--arms", default="timed,rows", help="comma-separated: timed, panels, rows, long-<impl>")
    args = p.parse_args()
    prepare(args.isa)
    from results_file import write_results

    from tenacia.serve.engine.cpu import prefill_path, products
    from tenacia.serve.engine.sequence import SamplingParams

    prefill_path.choose = lambda model, clock=None: "not raced (bench/prefill_ways.py)"
    products.PackedLinear.drop_unused = lambda self: None  # every arm's layouts kept
    short = {"timed": prefill_path.AS_TIMED, "panels": prefill_path.COLUMNS, "rows": prefill_path.ROWS}
    names = args.arms.split(",")
    for name in names:
        if name not in short and name.removeprefix("long-") not in ("kernel", "kernel-rows", "onednn", "mkl-packed"):
            p.error(f"--arms: {name!r} is not one of timed, panels, rows, long-kernel, long-kernel-rows, "
                    "long-onednn, long-mkl-packed")
    engine = smollm2_engine(args.threads, prefix_caching=False)
    kernels_line, products_line = engine.backend.describe()
    print(f"kernels {kernels_line}; products {products_line}", flush=True)
    ways = prefill_path.Ways(engine.runner.model)
    built = [lin.long_impl for lin in ways.products]

    def arrange(name: str) -> None:
        ways.arrange(short.get(name, prefill_path.AS_TIMED))
        for lin, impl in zip(ways.products, built, strict=True):
            lin.long_impl = name.removeprefix("long-") if name.startswith("long-") else impl

    rng = random.Random(0)
    times: dict[str, list[float]] = {n: [] for n in names}
    start = time.strftime("%H:%M:%S", time.gmtime())
    for i in range(args.pairs + 1):
        for name in names if i % 2 == 0 else names[::-1]:
            arrange(name)
            for j in range(args.seqs):
                engine.add_request(f"r{i}-{name}-{j}", [rng.randrange(100, 40000) for _ in range(args.tokens)],
                                   SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True))
            t = time.perf_counter()
            engine.step()
            if i:
                times[name].append(round((time.perf_counter() - t) * 1e3, 3))
    medians = {n: round(statistics.median(v), 2) for n, v in times.items()}
    summary = {}
    for name in names[1:]:
        ratios = [a / b for a, b in zip(times[name], times[names[0]], strict=True)]
        summary[f"{name} / {names[0]}"] = {"ratio_median": round(statistics.median(ratios), 4),
                                            "faster_in": sum(r < 1 for r in ratios), "rounds": len(ratios)}
    print(f"{args.seqs} x {args.tokens} tokens, medians ms {medians}")
    for key, value in summary.items():
        print(f"  {key}, paired: median {value['ratio_median']}, faster in {value['faster_in']} of {value['rounds']}")
    path = write_results("prefill-ways", {"setup": vars(args), "utc": [start, time.strftime("%H:%M:%S", time.gmtime())],
                                          "kernels": kernels_line, "products": products_line, "medians_ms": medians,
                                          "paired": summary, "each_ms": times})
    print(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
