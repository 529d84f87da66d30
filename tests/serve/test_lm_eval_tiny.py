"""lm-evaluation-harness itself against ``tenacia serve``, in the default suite: its
``local-completions`` model with the ``remote`` tokenizer (no tokenizer files on the client:
``/tokenizer_info``, ``/tokenize``, token-id prompts, ``echo`` with ``logprobs``) on a local
multiple-choice task of 50 questions (200 loglikelihood requests, ``bench/lm_eval_compare.py``'s
task), against its ``hf`` backend on the same tiny model directory: every loglikelihood within
1e-3 and the same answers. The same comparison on SmolLM2, with generation tasks through
local-completions and local-chat-completions, is ``test_lm_eval.py`` (slow).

lm-eval comes with the ``test`` extra (pyproject.toml); where it is missing the test is skipped
with the reason, except in CI (``CI=true``), where it fails."""

from __future__ import annotations

import importlib.util
import os

import pytest

from .conftest import API_KEY
from .tiny import REPO

ITEMS = 50


def require_lm_eval():
    """lm_eval, imported when the test runs (not at collection: it takes seconds)."""
    if os.environ.get("CI") == "true":
        import lm_eval

        return lm_eval
    return pytest.importorskip("lm_eval", reason="lm-eval is in the test extra: pip install -e '.[hf,test]'")


def write_tasks(out):
    spec = importlib.util.spec_from_file_location("lm_eval_compare", REPO / "bench" / "lm_eval_compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_tasks(out, ITEMS)


def loglikelihoods(result: dict) -> list[tuple[float, bool]]:
    rows = sorted(result["samples"]["tenacia_mc"], key=lambda r: r["doc_id"])
    return [(float(resp[0][0]), bool(resp[0][1])) for row in rows for resp in row["resps"]]


@pytest.mark.timeout(300)
def test_local_completions_equals_the_hf_backend(tiny_server, tiny_dir, tmp_path, monkeypatch):
    lm_eval = require_lm_eval()
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # lm-eval sends it as the bearer token
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    write_tasks(tmp_path / "tasks")
    tasks = TaskManager(include_path=str(tmp_path / "tasks"))
    run = {"tasks": ["tenacia_mc"], "task_manager": tasks, "log_samples": True}
    hf = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny_dir},dtype=float32", device="cpu",
                                 batch_size=16, **run)
    api = lm_eval.simple_evaluate(
        model="local-completions", **run,
        model_args=f"model=tiny,base_url={tiny_server.url}/v1/completions,tokenizer_backend=remote,"
                   "tokenized_requests=True,num_concurrent=4,max_retries=1")
    ours, theirs = loglikelihoods(api), loglikelihoods(hf)
    assert len(ours) == len(theirs) == 4 * ITEMS
    assert max(abs(a - b) for (a, _), (b, _) in zip(ours, theirs, strict=True)) <= 1e-3
    assert api["results"]["tenacia_mc"]["acc,none"] == hf["results"]["tenacia_mc"]["acc,none"]
