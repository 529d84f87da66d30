"""lm-evaluation-harness against ``tenacia serve``: its ``local-completions`` and
``local-chat-completions`` model types, with no tokenizer files on the client side (the
``remote`` tokenizer reads the server's ``/tokenizer_info``, ``/tokenize`` and ``/detokenize``),
compared with its ``hf`` backend on the same SmolLM2-135M-Instruct weights.

Tasks are written here as local files (no hub): ``tenacia_mc``, N four-way arithmetic questions
scored by loglikelihood, and ``tenacia_gen``, greedy completions of 64 tokens. Claims checked:
every loglikelihood equal to hf's within ``--tol`` (default 1e-3), every greedy output equal.

lm-eval runs in its own virtual environment, ``bench/.venvs/lm-eval`` (made on first use, never
the project's), with the project's own torch and transformers versions (torch from the CPU wheel
pip finds locally). Usage:

    python bench/lm_eval_compare.py [--items 60] [--tol 1e-3] [--reuse]

``--reuse`` keeps the samples of runs already in ``bench/results/lm_eval_work`` (same items).

Prints a table and writes ``bench/results/lm_eval.json``; exits 1 when a claim fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / ".venvs" / "lm-eval"
RESULTS = ROOT / "bench" / "results"
LM_EVAL = "lm-eval[api,hf]==0.4.13"
MODEL = "smollm2-135m-instruct"
GEN_PROMPTS = ["def fibonacci(n):", "The capital of France is", "Once upon a time,", "import numpy as np\n",
               "Q: What is 12 times 12?\nA:", "The three primary colors are", "SELECT name FROM",
               "Water boils at"]


def log(message: str) -> None:
    print(f"[lm-eval] {message}", file=sys.stderr, flush=True)


def ensure_venv() -> Path:
    """lm-eval in its own venv, with this project's torch and transformers versions."""
    lm_eval = VENV / "bin" / "lm-eval"
    spec = [LM_EVAL, f"torch=={version('torch')}", f"transformers=={version('transformers')}"]
    marker = VENV / ".installed"
    if marker.is_file() and marker.read_text() == "\n".join(spec):
        return lm_eval
    log(f"creating {VENV} and installing {' '.join(spec)} (once; minutes)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", *spec], check=True)
    marker.write_text("\n".join(spec))
    return lm_eval


def write_tasks(out: Path, items: int) -> None:
    """Two task configs and their JSONL data under ``out`` (``--include_path``)."""
    out.mkdir(parents=True, exist_ok=True)
    mc = []
    for i in range(items):
        a, b = 3 + (7 * i) % 41, 2 + (11 * i) % 37
        right = a + b
        choices = [right, right + 1 + i % 3, right - 2 - i % 2, right + 10]
        shift = i % 4  # the right answer at every position in turn
        choices = choices[-shift:] + choices[:-shift] if shift else choices
        mc.append({"question": f"What is {a} + {b}?", "choices": [f" {c}" for c in choices],
                   "label": choices.index(right)})
    gen = [{"prompt": p, "answer": ""} for p in GEN_PROMPTS]
    for name, rows in (("mc", mc), ("gen", gen)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {path}\ntest_split: test\n"
    (out / "tenacia_mc.yaml").write_text(
        "task: tenacia_mc\n" + common.format(path=out / "mc.jsonl")
        + "output_type: multiple_choice\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n")
    (out / "tenacia_gen.yaml").write_text(
        "task: tenacia_gen\n" + common.format(path=out / "gen.jsonl")
        + "output_type: generate_until\ndoc_to_text: \"{{prompt}}\"\ndoc_to_target: answer\n"
        "generation_kwargs:\n  until: []\n  max_gen_toks: 64\n  do_sample: false\n  temperature: 0\n"
        "metric_list:\n  - metric: exact_match\n")


def start_server(log_path: Path) -> tuple[subprocess.Popen, str]:
    """``tenacia serve smollm2`` on a free port, its output to ``log_path``; returns (process, url)."""
    cmd = [sys.executable, "-m", "tenacia", "serve", "smollm2", "--port", "0", "--threads", "1",
           "--kv-cache-tokens", "8192"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if m := re.search(r"listening on (http://\S+)", log_path.read_text()):
            return proc, m.group(1)
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"tenacia serve did not start: {log_path.read_text()[-2000:]}")


def run_lm_eval(lm_eval: Path, tasks_dir: Path, out: Path, tasks: str, model: str, model_args: str,
                *extra: str, reuse: bool = False) -> dict[str, list[dict]]:
    """One lm-eval run (skipped when ``reuse`` and its samples are there); returns task -> its
    logged samples, in document order."""
    if reuse and (samples := read_samples(out)) and set(samples) == set(tasks.split(",")):
        log(f"{model}: reusing {out}")
        return samples
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "OPENAI_API_KEY": "none", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(lm_eval), "run", "--model", model, "--model_args", model_args, "--tasks", tasks,
           "--include_path", str(tasks_dir), "--log_samples", "--output_path", str(out), *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lm-eval {model} failed:\n{done.stderr[-4000:]}")
    log(f"{model}: {time.perf_counter() - t0:.1f} s")
    return read_samples(out)


def read_samples(out: Path) -> dict[str, list[dict]]:
    samples: dict[str, list[dict]] = {}
    for path in out.rglob("samples_*.jsonl"):
        task = re.match(r"samples_(.+?)_\d{4}-", path.name).group(1)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        samples[task] = sorted(rows, key=lambda r: r["doc_id"])
    return samples


def loglikelihoods(rows: list[dict]) -> list[float]:
    return [float(resp[0][0]) for row in rows for resp in row["resps"]]


def generations(rows: list[dict]) -> list[str]:
    return [row["resps"][0][0] for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60, help="multiple-choice questions (at least 50 in CI)")
    parser.add_argument("--tol", type=float, default=1e-3, help="largest allowed loglikelihood difference")
    parser.add_argument("--out", type=Path, default=RESULTS / "lm_eval.json")
    parser.add_argument("--reuse", action="store_true", help="keep the runs already done (same --items)")
    args = parser.parse_args(argv)

    from tenacia.data.smollm2 import smollm2_dir

    lm_eval = ensure_venv()
    work = RESULTS / "lm_eval_work"
    write_tasks(work / "tasks", args.items)
    weights = smollm2_dir()
    hf_args = f"pretrained={weights},dtype=float32"
    hf = run_lm_eval(lm_eval, work / "tasks", work / "hf", "tenacia_mc,tenacia_gen", "hf", hf_args,
                     "--device", "cpu", "--batch_size", "8", reuse=args.reuse)
    hf_chat = run_lm_eval(lm_eval, work / "tasks", work / "hf_chat", "tenacia_gen", "hf", hf_args,
                          "--device", "cpu", "--apply_chat_template", reuse=args.reuse)
    proc, url = start_server(work / "serve.log")
    try:
        api = run_lm_eval(lm_eval, work / "tasks", work / "api", "tenacia_mc,tenacia_gen", "local-completions",
                          f"model={MODEL},base_url={url}/v1/completions,tokenizer_backend=remote,"
                          "tokenized_requests=True,num_concurrent=4,max_retries=1", reuse=args.reuse)
        chat = run_lm_eval(lm_eval, work / "tasks", work / "chat", "tenacia_gen", "local-chat-completions",
                           f"model={MODEL},base_url={url}/v1/chat/completions,tokenizer_backend=remote,"
                           "num_concurrent=4,max_retries=1", "--apply_chat_template", reuse=args.reuse)
    finally:
        proc.terminate()
        proc.wait(30)

    ll_hf, ll_api = loglikelihoods(hf["tenacia_mc"]), loglikelihoods(api["tenacia_mc"])
    diff = max(abs(a - b) for a, b in zip(ll_hf, ll_api, strict=True))
    same_gen = sum(a == b for a, b in zip(generations(hf["tenacia_gen"]), generations(api["tenacia_gen"]), strict=True))
    same_chat = sum(a == b for a, b in zip(generations(hf_chat["tenacia_gen"]), generations(chat["tenacia_gen"]),
                                           strict=True))
    acc = {name: sum(r["acc"] for r in s["tenacia_mc"]) / len(s["tenacia_mc"]) for name, s in (("hf", hf), ("api", api))}
    result = {"items": args.items, "requests": len(ll_hf), "max_abs_loglikelihood_diff": diff, "tol": args.tol,
              "acc_hf": acc["hf"], "acc_local_completions": acc["api"],
              "greedy_equal_completions": f"{same_gen}/{len(GEN_PROMPTS)}",
              "greedy_equal_chat": f"{same_chat}/{len(GEN_PROMPTS)}"}
    ok = diff <= args.tol and same_gen == len(GEN_PROMPTS) and same_chat == len(GEN_PROMPTS)
    result["ok"] = ok
    print(f"{'claim':<44} {'value':>14}")
    for key, value in result.items():
        print(f"{key:<44} {value!s:>14}")
    from results_file import write_results  # bench/ is on sys.path when this runs as a script

    write_results("lm_eval", result, args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
