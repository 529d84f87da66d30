"""A prompt whose prefix is cached (a shared system prompt, an earlier turn of a chat): its new
tokens attend over the cached ones. SmolLM2-135M float32 in one engine process (no HTTP): a prompt
of ``--prefix`` tokens is prefilled once, then each round a prompt of the same prefix and
``--tokens`` new random tokens is prefilled (only its new tokens run) and its step timed.

    .venv/bin/python bench/prefix_prefill.py --isa avx512 --prefix 1000 --tokens 100 --rounds 10

Three arms, in turns, in one engine: the kernels' tiled prefill attention with the cached tokens
first (``KernelBackend.prefix_attention``, ``prefill_attention.c`` since 2026-12-05), torch's
``scaled_dot_product_attention`` with a mask (``TorchBackend.prefix_attention``, before), and for
reference a prompt of the new tokens alone (nothing cached). Prints
the medians and the paired ratio; writes bench/results/prefix-prefill-<time>.json.
"""

from __future__ import annotations

import random
import statistics
import time

from inprocess_engine import ROOT, parser, prepare, smollm2_engine  # imports no torch


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--prefix", type=int, default=1000)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    prepare(args.isa)
    from results_file import write_results

    from tenacia.serve.engine.backend import TorchBackend
    from tenacia.serve.engine.cpu.backend import KernelBackend
    from tenacia.serve.engine.sequence import SamplingParams

    engine = smollm2_engine(args.threads, prefix_caching=True)
    if not isinstance(engine.backend, KernelBackend):
        p.error(f"the engine runs {type(engine.backend).__name__}, not the kernels: nothing to compare")
    rng = random.Random(0)
    prefix = [rng.randrange(100, 40000) for _ in range(args.prefix)]
    one = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    engine.add_request("prefix", prefix + [rng.randrange(100, 40000)], one)
    while engine.has_work():
        engine.step()
    arms = {"kernel": KernelBackend.prefix_attention, "torch sdpa": TorchBackend.prefix_attention,
            "no cached prefix": KernelBackend.prefix_attention}
    times: dict[str, list[float]] = {name: [] for name in arms}
    start = time.strftime("%H:%M:%S", time.gmtime())
    for r in range(args.rounds + 1):  # round 0 warms up
        for name in arms if r % 2 == 0 else list(arms)[::-1]:
            engine.backend.prefix_attention = arms[name].__get__(engine.backend)
            new = [rng.randrange(100, 40000) for _ in range(args.tokens)]
            engine.add_request(f"{r}-{name}", new if name == "no cached prefix" else prefix + new, one)
            t = time.perf_counter()
            engine.step()
            if r:
                times[name].append(round((time.perf_counter() - t) * 1e3, 2))
            while engine.has_work():
                engine.step()
    hits = engine.cache.allocator.hit_tokens
    medians = {n: round(statistics.median(v), 2) for n, v in times.items()}
    ratios = [a / b for a, b in zip(times["kernel"], times["torch sdpa"], strict=True)]
    print(f"{args.tokens} new tokens after a cached prefix of {args.prefix} ({hits} prompt tokens found cached in all): "
          f"medians ms {medians}; kernel / torch sdpa, paired: median {statistics.median(ratios):.3f}, "
          f"faster in {sum(x < 1 for x in ratios)} of {len(ratios)}")
    path = write_results("prefix-prefill", {"setup": vars(args), "utc": [start, time.strftime("%H:%M:%S", time.gmtime())],
                                            "medians_ms": medians, "each_ms": times, "cached_tokens": hits})
    print(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
