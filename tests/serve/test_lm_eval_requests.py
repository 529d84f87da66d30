"""The requests lm-evaluation-harness sends, byte for byte in shape, without lm-eval installed (the
full comparison with lm-eval itself, ``test_lm_eval.py``, is slow: it builds lm-eval's venv).
Its ``local-completions`` model with ``tokenizer_backend=remote`` and ``tokenized_requests``:
the remote-tokenizer probe (``GET /tokenizer_info`` must hold ``eos_token``; ``POST /tokenize``
``{"prompt": "test", "add_special_tokens": false}``; the EOS id is the first token of its text),
loglikelihood batches (token-id prompts, ``max_tokens: 1``, ``logprobs: 1``, ``echo: true``, read
as lm-eval reads them: the sum of ``token_logprobs[ctxlen:-1]`` and whether each equals the
largest of its ``top_logprobs``), and greedy generation batches (``stop`` with the EOS text,
``seed``), each checked against the tiny model's own forward."""

from __future__ import annotations

import httpx
import pytest

from .conftest import API_KEY
from .test_api_echo import reference  # noqa: F401  (the fixture: the tiny model's log-softmax)

HEADERS = {"Authorization": f"Bearer {API_KEY}"}  # lm-eval sends OPENAI_API_KEY as a bearer token
# (context, continuation) token ids, as lm-eval's loglikelihood requests arrive after tokenizing
PAIRS = [([120, 45, 300, 7], [260, 88]), ([5, 6, 7], [300]), ([19, 401, 33, 2, 90], [91, 92, 93]), ([11], [12, 13])]


def post(server, path: str, body: dict) -> dict:
    r = httpx.post(server.url + path, json=body, headers=HEADERS, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_remote_tokenizer_probe_passes(tiny_server, tokenizer):
    info = httpx.get(tiny_server.url + "/tokenizer_info", headers=HEADERS).json()
    assert "eos_token" in info and info["chat_template"]
    tokens = post(tiny_server, "/tokenize", {"prompt": "test", "add_special_tokens": False})["tokens"]
    assert tokens == tokenizer.encode("test", add_special_tokens=False).ids
    eos = post(tiny_server, "/tokenize", {"prompt": info["eos_token"], "add_special_tokens": False})["tokens"]
    assert eos == [info["eos_token_id"]]
    assert post(tiny_server, "/detokenize", {"tokens": tokens})["prompt"] == "test"


def test_a_loglikelihood_batch_reads_as_lm_eval_reads_it(tiny_server, reference):  # noqa: F811
    payload = {"model": "tiny", "prompt": [c + x for c, x in PAIRS], "temperature": 0, "max_tokens": 1,
               "logprobs": 1, "seed": 1234, "echo": True}
    out = post(tiny_server, "/v1/completions", payload)
    choices = sorted(out["choices"], key=lambda c: c["index"])
    assert len(choices) == len(PAIRS)
    for choice, (context, continuation) in zip(choices, PAIRS, strict=True):
        ctxlen = len(context)
        values = choice["logprobs"]["token_logprobs"][ctxlen:-1]
        tops = choice["logprobs"]["top_logprobs"][ctxlen:-1]
        assert len(values) == len(continuation), "the prompt's tokens, then one generated token"
        ids = context + continuation
        want = reference(ids)  # (T, vocab): row p predicts token p + 1
        expected = [want[p - 1, ids[p]].item() for p in range(ctxlen, len(ids))]
        assert sum(values) == pytest.approx(sum(expected), abs=1e-4)
        greedy = all(v == max(top.values()) for v, top in zip(values, tops, strict=True))
        assert greedy == all(int(want[p - 1].argmax()) == ids[p] for p in range(ctxlen, len(ids)))


def test_a_generation_batch_answers_each_prompt_greedily_in_order(tiny_server, tokenizer, reference):  # noqa: F811
    info = httpx.get(tiny_server.url + "/tokenizer_info", headers=HEADERS).json()
    prompts = [c for c, _ in PAIRS]
    payload = {"prompt": prompts, "model": "tiny", "max_tokens": 12, "temperature": 0,
               "stop": [info["eos_token"]], "seed": 1234}
    out = post(tiny_server, "/v1/completions", payload)
    texts = [None] * len(out["choices"])
    for choice in out["choices"]:
        texts[choice["index"]] = choice["text"]
    for prompt, text in zip(prompts, texts, strict=True):
        ids = list(prompt)
        for _ in range(12):
            token = int(reference(ids)[-1].argmax())
            if token == info["eos_token_id"]:
                break
            ids.append(token)
        assert text == tokenizer.decode(ids[len(prompt):], skip_special_tokens=True)  # as vLLM (and OpenAI) answer
