"""How long running streams wait while a long prompt is prefilled: SmolLM2-135M float32 in one
engine process (no HTTP), ``--streams`` sequences decoding from 100-token prompts, then one prompt of
``--long-tokens`` tokens arrives; the engine steps until it has its first token.

    .venv/bin/python bench/prefill_stall.py --isa avx512 --rounds 2

The arms, in turns, in one engine: "prefill first" (the scheduler before 2026-12-05: every step a
prefill while any prompt waits, ``max_batched_tokens`` tokens a step, so the prompt's chunks run back
to back) and "in turns" for each of ``--while-decoding`` (that many tokens a prefill step while
sequences decode, then a decode step: ``scheduler.py``, ``engine.prefill_while_decoding``). For each it reports the streams' longest wait for a
token while the prompt was prefilled (the longest time between two decode steps), the prompt's
time to its first token, and the steps it took. Writes bench/results/prefill-stall-<time>.json.
"""

from __future__ import annotations

import random
import statistics
import time

from inprocess_engine import ROOT, parser, prepare, smollm2_engine  # imports no torch


def main() -> int:
    p = parser(__doc__, ("avx512", "avx2", "generic", "torch"))
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--long-tokens", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--while-decoding", default="512",
                   help="comma-separated prefill_while_decoding values, an arm each (default: the engine's 512)")
    args = p.parse_args()
    prepare(args.isa)
    from results_file import write_results

    from tenacia.serve.engine.sequence import SamplingParams

    engine = smollm2_engine(args.threads, prefix_caching=False)
    cfg = engine.cfg
    sched = engine.scheduler
    in_turns = sched.schedule

    def prefill_first():  # the scheduler's rule before 2026-12-05
        return sched._schedule_prefill(sched.max_batched_tokens) or sched._schedule_decode()

    def in_turns_with(tokens: int):
        def rule():
            sched.prefill_while_decoding = tokens
            return in_turns()
        return rule

    arms = {"prefill first": prefill_first} | {f"in turns, {v} tokens a prefill": in_turns_with(int(v))
                                                for v in args.while_decoding.split(",")}
    long_tokens = min(args.long_tokens, engine.max_context - 8)
    rng = random.Random(0)
    params = SamplingParams(max_tokens=1000, temperature=0.0, ignore_eos=True)  # streams: aborted after
    long_params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    results: dict[str, list[dict]] = {name: [] for name in arms}
    start = time.strftime("%H:%M:%S", time.gmtime())
    kinds: list[str] = []

    def recorded(rule):
        def schedule():
            batch = rule()
            kinds.append("prefill" if batch is not None and batch.prefill else "decode")
            return batch
        return schedule

    for r in range(args.rounds + 1):  # round 0 warms up
        for name in arms if r % 2 == 0 else list(arms)[::-1]:
            sched.schedule = recorded(arms[name])
            for i in range(args.streams):
                engine.add_request(f"s{r}-{i}", [rng.randrange(100, 40000) for _ in range(100)], params)
            engine.step()  # their prefill
            for _ in range(3):
                engine.step()  # decoding
            engine.add_request(f"long{r}", [rng.randrange(100, 40000) for _ in range(long_tokens)], long_params)
            t0 = last_decode = time.perf_counter()
            waits, first = [], None
            kinds.clear()
            while first is None:
                deltas = engine.step()
                now = time.perf_counter()
                if kinds[-1] == "decode":
                    waits.append(now - last_decode)
                    last_decode = now
                if any(d.request_id == f"long{r}" for d in deltas):
                    first = now - t0
            if kinds[-1] == "prefill":  # the streams still wait for the decode step after it
                waits.append(time.perf_counter() - last_decode)
            for rid in [s.request_id for s in (*sched.running, *sched.waiting)]:
                engine.abort(rid)
            if r:
                results[name].append({"longest_wait_ms": round(max(waits) * 1e3, 1), "ttft_ms": round(first * 1e3, 1),
                                      "prefill_steps": kinds.count("prefill"), "decode_steps": kinds.count("decode")})
            sched.last_was_prefill = False
    print(f"{args.streams} streams decoding, a prompt of {long_tokens} tokens arrives "
          f"(max_batched_tokens {cfg.max_batched_tokens})")
    print("| arm | streams' longest wait for a token, ms | the prompt's TTFT, ms | prefill / decode steps |")
    print("|---|---|---|---|")
    for name, rounds in results.items():
        wait = statistics.median(x["longest_wait_ms"] for x in rounds)
        ttft = statistics.median(x["ttft_ms"] for x in rounds)
        print(f"| {name} | {wait:.1f} ({[x['longest_wait_ms'] for x in rounds]}) | {ttft:.1f} "
              f"({[x['ttft_ms'] for x in rounds]}) | {rounds[0]['prefill_steps']} / {rounds[0]['decode_steps']} |")
    path = write_results("prefill-stall", {"setup": vars(args) | {"long_tokens": long_tokens},
                                           "utc": [start, time.strftime("%H:%M:%S", time.gmtime())],
                                           "decode_kernels": engine.backend.describe()[0], "arms": results})
    print(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
