"""What ``tenacia export`` writes for a trained ``moe-tiny`` run, served by ``tenacia serve`` (a real
server process, a real HTTP client): the greedy completion equals transformers' ``generate`` on
the same exported directory, logprobs included.

The tie rules of ``test_serve_deepseek.py`` apply: the test checks, on transformers' own
sequence, that every routing choice has a margin over 1e-5 and every greedy token a logit gap
over 1e-4, so that neither implementation's tie rule decides anything here."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer

from tenacia.cli import main as tenacia_main
from tests.model.deepseek_tiny import routing_margin
from tests.train.moe_run import run_config

from .tiny import ServerProcess

STEPS, PROMPT_LEN, NEW = 8, 12, 12


@pytest.mark.timeout(300)  # a server start and a training run: two minutes on 2 loaded cores
def test_the_export_of_a_trained_moe_run_serves_transformers_greedy_tokens(tmp_path):
    from openai import OpenAI
    from transformers import AutoModelForCausalLM

    from tenacia.model.hf import load_hf_dir
    from tenacia.train.trainer import Trainer

    torch.set_num_threads(1)
    Trainer(run_config(tmp_path, STEPS)).fit()  # the small moe-tiny of tests/train/moe_run.py
    out = tmp_path / "hf"
    assert tenacia_main(["export", str(tmp_path / "run"), "--out", str(out)]) == 0

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    prompt = tok.encode("def parse_args(argv):\n    parser = argparse").ids[:PROMPT_LEN]
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.inference_mode():
        ids = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False, eos_token_id=None,
                          pad_token_id=0)
        logits = hf(ids).logits[0, len(prompt) - 1:-1]  # (NEW, vocab): the rows that chose each new token
    new = ids[0, len(prompt):]
    assert len(new) == NEW
    top2 = logits.topk(2, dim=-1).values
    assert (top2[:, 0] - top2[:, 1]).min().item() > 1e-4
    assert routing_margin(load_hf_dir(out), ids) > 1e-5
    logprobs = logits.log_softmax(-1).gather(1, new[:, None])[:, 0].tolist()

    with ServerProcess(out, "--kv-cache-tokens", "256", "--name", "moe") as server, \
            OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60) as client:
        r = client.completions.create(model="moe", prompt=prompt, max_tokens=NEW, temperature=0, logprobs=0,
                                      extra_body={"ignore_eos": True})
    assert r.choices[0].text == tok.decode(new.tolist(), skip_special_tokens=False)
    assert r.usage.completion_tokens == NEW
    got = r.choices[0].logprobs.token_logprobs
    assert max(abs(a - b) for a, b in zip(got, logprobs, strict=True)) < 1e-4
