"""lm-evaluation-harness against ``tenacia serve`` equals its ``hf`` backend on SmolLM2: every
loglikelihood of a 60-item local multiple-choice task within 1e-3, the same greedy outputs over 64
tokens through local-completions and local-chat-completions (``bench/lm_eval_compare.py``, which
makes lm-eval's own venv on first use: minutes). Slow: ``make test-slow``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .tiny import REPO

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]


@pytest.mark.timeout(3600)
def test_lm_eval_local_completions_equals_its_hf_backend(tmp_path):
    out = tmp_path / "lm_eval.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "lm_eval_compare.py"), "--items", "60",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["requests"] == 240 and result["max_abs_loglikelihood_diff"] <= 1e-3
    assert result["acc_hf"] == result["acc_local_completions"]
