"""SmolLM2-135M-Instruct served for real: its own chat template (with the default system prompt
it injects), greedy answers equal to transformers' ``generate``, a sensible answer."""

from __future__ import annotations

import pytest
import torch

# pytest-timeout counts a fixture's setup in the test that starts it: the shared server may take
# up to its own start limit (600 s, conftest.py) before any of these tests' few seconds of work
pytestmark = [pytest.mark.smollm2, pytest.mark.timeout(720)]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2_dir():
    from tenacia.data.smollm2 import smollm2_dir

    return smollm2_dir()


@pytest.fixture(scope="module")
def server(smollm2_dir, smollm2_server):
    return smollm2_server


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    with OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60) as c:
        yield c


def test_greedy_chat_equals_transformers_generate(client, smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_dict=True)["input_ids"]
    hf = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    want = tok.decode(out[0, len(ids):], skip_special_tokens=True)

    r = client.chat.completions.create(model="smollm2-135m-instruct", messages=QUESTION, max_tokens=12, temperature=0)
    assert r.usage.prompt_tokens == len(ids)  # SmolLM2's template adds its default system prompt
    assert r.choices[0].message.content == want
    assert "Paris" in r.choices[0].message.content


def test_streamed_chat_stops_at_end_of_turn(client):
    chunks = list(client.chat.completions.create(
        model="smollm2-135m-instruct", messages=QUESTION, max_tokens=64, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text and "<|im_end|>" not in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens < 64
