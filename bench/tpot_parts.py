"""Where a request's time per output token goes at one concurrency level: bench/serve.py's workload
(SmolLM2-135M float32, 16 chat prompts of 100 tokens, 64 output tokens, greedy, EOS ignored)
against one `tenacia serve` server, with every token's arrival time kept, the engine's own step
times read from its /metrics (``tenacia_step_seconds``, sum and count for prefill and decode
steps), and the CPU seconds of each process (the HTTP server, the engine process, this client).

    .venv/bin/python bench/tpot_parts.py --isa avx512 --concurrency 16 --rounds 3

For each round it prints: the wall time of the sweep; the engine's prefill and decode steps (how
many, their total and mean time); what is left of the wall time (the engine idle between steps:
messages in and out, waiting for requests); each request's TPOT and how much of it is gaps much
longer than a decode step (a prefill of other requests run between two of its tokens); and the
processes' CPU seconds (this client's with ``--client lean``, the default, or ``openai``, the
SDK). Writes bench/results/tpot-parts-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from results_file import write_results  # noqa: E402
from serve import make_prompts  # noqa: E402
from serve_client import CLIENTS, content_times, pool  # noqa: E402
from serve_servers import settle, start_tenacia, stopping_all  # noqa: E402

STEP = re.compile(r'^tenacia_step_seconds_(sum|count)\{kind="(prefill|decode)"\} (\S+)$', re.M)


def step_totals(url: str) -> dict[str, float]:
    """{"prefill_sum", "prefill_count", "decode_sum", "decode_count"} from the server's /metrics."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    return {f"{kind}_{what}": float(v) for what, kind, v in STEP.findall(text)}


def cpu_by_process(session: int) -> dict[int, tuple[str, float]]:
    """pid -> (name, CPU seconds) for every process of a session."""
    out, tick = {}, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1:text.rindex(")")], text.rsplit(")", 1)[1].split()
        if int(fields[3]) == session:
            out[int(stat.parent.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


async def sweep(url: str, model: str, prompts, concurrency: int, max_tokens: int,
                client: str) -> tuple[list[dict], float]:
    return await pool(url, prompts, concurrency, lambda c, p: content_times(c, model, p, max_tokens), client)


def parts(records: list[dict], decode_mean_s: float) -> dict:
    """TTFT p50, each request's TPOT and the gaps' (ITL's) p50 over every request (ms), and the part
    of TPOT in gaps longer than 3 decode steps."""
    tpot, long_gaps, n_long, itl = [], [], [], []
    ttft = [(r["times"][0] - r["start"]) * 1e3 for r in records]
    for r in records:
        t = r["times"]
        gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
        big = [g for g in gaps if g > 3 * decode_mean_s]
        itl += gaps
        tpot.append((t[-1] - t[0]) / (len(t) - 1) * 1e3)
        long_gaps.append(sum(big) / (len(t) - 1) * 1e3)
        n_long.append(len(big))
    return {"ttft_p50_ms": round(statistics.median(ttft), 2), "tpot_p50_ms": round(statistics.median(tpot), 2),
            "itl_p50_ms": round(statistics.median(itl) * 1e3, 2), "tpot_ms": [round(x, 2) for x in sorted(tpot)],
            "long_gap_share_of_tpot_p50_ms": round(statistics.median(long_gaps), 2),
            "requests_with_a_long_gap": sum(1 for n in n_long if n), "chunks_a_request": len(records[0]["times"])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--isa", default=None, help="TENACIA_ISA for the server (default: the engine's choice)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=100)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prefix-caching", action="store_true")
    p.add_argument("--client", choices=CLIENTS, default="lean", help="the streaming client (bench/serve_client.py)")
    args = p.parse_args()

    from tenacia.data.smollm2 import smollm2_dir

    prompts = make_prompts(smollm2_dir(), args.prompts, args.prompt_tokens)
    server, url, model = start_tenacia(args, args.isa, "tpot-parts")
    rounds = []
    try:
        asyncio.run(sweep(url, model, prompts[:2], 2, 8, args.client))  # warm-up
        for r in range(args.rounds):
            settle([server])
            before, cpu0, me0 = step_totals(url), cpu_by_process(server.proc.pid), time.process_time()
            records, wall = asyncio.run(sweep(url, model, prompts, args.concurrency, args.output_tokens,
                                                 args.client))
            after, cpu1, me1 = step_totals(url), cpu_by_process(server.proc.pid), time.process_time()
            d = {k: after[k] - before.get(k, 0.0) for k in after}
            decode_mean = d["decode_sum"] / max(1, d["decode_count"])
            cpu = {f"{name} ({pid})": round(s - cpu0.get(pid, (name, 0.0))[1], 2) for pid, (name, s) in cpu1.items()}
            row = {"wall_s": round(wall, 3), "prefill_steps": int(d["prefill_count"]),
                   "prefill_s": round(d["prefill_sum"], 3), "decode_steps": int(d["decode_count"]),
                   "decode_s": round(d["decode_sum"], 3), "decode_step_mean_ms": round(decode_mean * 1e3, 2),
                   "engine_idle_s": round(wall - d["prefill_sum"] - d["decode_sum"], 3),
                   "cpu_s": cpu, "client_cpu_s": round(me1 - me0, 2), **parts(records, decode_mean)}
            rounds.append(row)
            print(f"round {r + 1}: {row}", flush=True)
    finally:
        server.stop()
    path = write_results("tpot-parts", {"setup": vars(args), "rounds": rounds})
    print(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    with stopping_all():
        raise SystemExit(main())
