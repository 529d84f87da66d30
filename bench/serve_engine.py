"""The serving engine alone, in-process (no HTTP): SmolLM2-135M-Instruct in float32, one burst of
``--seqs`` prompts of ``--prompt-tokens`` random tokens prefilled in one step, then decoded
together. Prints a table and writes bench/results/serve-engine-<time>.json:

    .venv/bin/python bench/serve_engine.py                         # as `tenacia serve` runs it
    .venv/bin/python bench/serve_engine.py --no-keep-freed-memory  # glibc's allocator defaults
    .venv/bin/python bench/serve_engine.py --no-huge-pages         # 4 KiB pages (host.py)
    .venv/bin/python bench/serve_engine.py --isa generic           # a kernel build forced (or torch)
    .venv/bin/python bench/serve_engine.py --breakdown             # where a step's time goes
    .venv/bin/python bench/serve_engine.py --layer-by-layer        # decode without the decode stack

``--breakdown`` times every call the model makes to its backend (each product by name, the
attention, the elementwise kernels or ops, the sampling) during the one-prompt prefill and the decode steps
of the measured rounds, and prints the median milliseconds a step spends in each; "of which
causal_attention" is the part of a prefill's attention in the backend's call (the kernel and its
wrapper), the rest of "attention" being the cache store.

This is where the per-change figures of docs/serving.md ("Speed") come from: a prefill of 16 x 100
tokens and a decode step of 16 sequences, each repeated ``--rounds`` times.
"""

from __future__ import annotations

import argparse
import contextlib
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
    p.add_argument("--no-decode-kernels", action="store_true", help="torch ops and the timed products alone")
    p.add_argument("--isa", choices=("avx512", "avx2", "generic", "torch"), help="force a kernel build (TENACIA_ISA)")
    p.add_argument("--breakdown", action="store_true", help="time each kind of call a step makes to the backend")
    p.add_argument("--layer-by-layer", action="store_true",
                   help="decode each layer through the backend's calls, not in one call (engine/cpu/decode_stack.py)")
    args = p.parse_args()
    if args.isa:
        os.environ["TENACIA_ISA"] = args.isa

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
    if args.layer_by_layer:
        engine.runner.model.decode_stack = None
    spans = Spans(engine) if args.breakdown else None
    rng = random.Random(0)
    single, burst, decode = [], [], []
    for r in range(args.rounds + 1):  # round 0 warms up
        engine.add_request(f"one{r}", [rng.randrange(100, 40000) for _ in range(args.prompt_tokens)],
                           SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True))
        t = time.perf_counter()
        with spans.step("prefill", r) if spans else contextlib.nullcontext():
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
            with spans.step("decode", r) if spans else contextlib.nullcontext():
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
    if spans:
        result["breakdown_ms"] = {f"prefill_1x{args.prompt_tokens}": spans.medians("prefill"),
                                  f"decode_step_{args.seqs}_seqs": spans.medians("decode")}
    out = ROOT / "bench" / "results" / f"serve-engine-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| measure | median ms | rounds |\n|---|---|---|")
    for key in [k for k in result if k.endswith("_ms") and k != "breakdown_ms"]:
        print(f"| {key} | {result[key]['median']} | {result[key].get('all', '')} |")
    for step, parts in result.get("breakdown_ms", {}).items():
        print(f"\n{step}, median ms a step:\n| call | ms |\n|---|---|")
        for name, value in parts.items():
            print(f"| {name} | {value} |")
    print(f"written {out.relative_to(ROOT)}")
    return 0


class Spans:
    """Times the model's calls to its backend, per step (``--breakdown``): every layer's products
    by name, the output product, the attention, the backend's elementwise calls, and the
    sampling. Steps of the warm-up round (0) are not counted."""

    PRODUCTS = ("qkv", "wo", "gate", "up", "gate_up", "down")
    CALLS = ("add_rms_norm", "rotary_", "silu_mul", "silu_mul_pair")
    WITHIN = "  of which causal_attention"  # inside "attention": not added to the step's sum

    def __init__(self, engine):
        self.now: dict | None = None  # the running step's sums
        self.steps: dict[str, list[dict]] = {}
        model = engine.runner.model
        for layer in model.layers:
            for name in self.PRODUCTS:
                if getattr(layer, name) is not None:
                    setattr(layer, name, self._timed(getattr(layer, name), f"product {name}"))
        model.output = self._timed(model.output, "product output")
        if model.decode_stack is not None:  # a decode step's layers, all in one call
            model.decode_stack = self._timed(model.decode_stack, "decode stack (every layer)")
        engine.attention.attend = self._timed(engine.attention.attend, "attention")
        engine.runner.sampler = self._timed(engine.runner.sampler, "sampling")
        if hasattr(engine.backend, "causal_attention"):  # the part of a prefill's attention that is not the cache store
            engine.backend.causal_attention = self._timed(engine.backend.causal_attention, self.WITHIN)
        for name in self.CALLS:
            setattr(engine.backend, name, self._timed(getattr(engine.backend, name), name))

    def _timed(self, fn, key: str):
        def timed(*args, **kwargs):
            if self.now is None:
                return fn(*args, **kwargs)
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            self.now[key] = self.now.get(key, 0.0) + time.perf_counter() - t
            return out
        return timed

    @contextlib.contextmanager
    def step(self, kind: str, round_: int):
        self.now = {}
        t = time.perf_counter()
        try:
            yield
        finally:
            sums, self.now = self.now, None
            sums["whole step"] = time.perf_counter() - t
            sums["rest (layout, embedding, detokenize, ...)"] = sums["whole step"] - sum(
                v for k, v in sums.items() if k not in ("whole step", self.WITHIN))
            if round_ > 0:
                self.steps.setdefault(kind, []).append(sums)

    def medians(self, kind: str) -> dict[str, float]:
        steps = self.steps.get(kind, [])
        keys = sorted({k for s in steps for k in s}, key=lambda k: -statistics.median(s.get(k, 0.0) for s in steps))
        return {k: round(statistics.median(s.get(k, 0.0) for s in steps) * 1000, 2) for k in keys}


if __name__ == "__main__":
    raise SystemExit(main())
