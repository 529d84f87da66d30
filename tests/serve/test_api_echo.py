"""What evaluation harnesses send: token-id prompts scored verbatim, ``echo`` with the prompt's
logprobs, ``max_tokens=0`` loglikelihood requests, and ``GET /tokenizer_info``; through the
official ``openai`` client against a real server, checked against a direct torch forward."""

from __future__ import annotations

import httpx
import openai
import pytest
import torch

from .conftest import API_KEY

PROMPT_IDS = [[120, 45, 300, 7, 260, 88, 19, 401], [5, 6, 7, 300, 301]]
SCORE = {"temperature": 0.0, "echo": True, "logprobs": 3}


@pytest.fixture(scope="module")
def reference(tiny_dir):
    """Per-position log-softmax of the tiny model's own forward: ids -> (T, vocab)."""
    from tenacia.model.hf import load_hf_dir

    model = load_hf_dir(tiny_dir)

    def logprobs(ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return model(torch.tensor([ids]))[0].log_softmax(dim=-1)

    return logprobs


def test_max_tokens_0_with_echo_scores_every_prompt_token_like_a_forward(client, reference):
    r = client.completions.create(model="tiny", prompt=PROMPT_IDS, max_tokens=0, **SCORE)
    assert r.usage.completion_tokens == 0 and r.usage.prompt_tokens == sum(map(len, PROMPT_IDS))
    for choice in r.choices:
        ids = PROMPT_IDS[choice.index]
        lp = choice.logprobs
        assert choice.finish_reason == "length" and len(lp.tokens) == len(ids)
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts the first
        want = reference(ids)
        for p in range(1, len(ids)):
            assert lp.token_logprobs[p] == pytest.approx(want[p - 1, ids[p]].item(), abs=1e-4)
            top = sorted(lp.top_logprobs[p].values(), reverse=True)
            assert top == pytest.approx(want[p - 1].topk(3).values.tolist(), abs=1e-4)


def test_echo_returns_the_prompt_then_the_generated_tokens(client, tokenizer, reference):
    ids = PROMPT_IDS[0]
    r = client.completions.create(model="tiny", prompt=ids, max_tokens=6, extra_body={"ignore_eos": True}, **SCORE)
    choice = r.choices[0]
    prompt_text = tokenizer.decode(ids, skip_special_tokens=False)
    assert choice.text.startswith(prompt_text) and len(choice.text) > len(prompt_text)
    lp = choice.logprobs
    assert len(lp.tokens) == len(ids) + 6 and r.usage.completion_tokens == 6
    assert lp.text_offset[len(ids)] == len(prompt_text)
    greedy = list(ids)
    for _ in range(6):
        greedy.append(int(reference(greedy)[-1].argmax()))
    want = reference(greedy)
    for p in range(1, len(greedy)):
        assert lp.token_logprobs[p] == pytest.approx(want[p - 1, greedy[p]].item(), abs=1e-4)
    for p in range(len(ids), len(ids) + 6):  # greedy: the token is the top entry, bit for bit
        assert lp.token_logprobs[p] == max(lp.top_logprobs[p].values())
        assert lp.top_logprobs[p][lp.tokens[p]] == lp.token_logprobs[p]


def test_top_entry_of_a_prompt_token_is_its_own_value_bit_for_bit(client):
    """Where a prompt token is among its row's top alternatives, both numbers are one number."""
    r = client.completions.create(model="tiny", prompt=PROMPT_IDS[1], max_tokens=0, temperature=0.0, echo=True,
                                  logprobs=20)
    lp = r.choices[0].logprobs
    for p in range(1, len(PROMPT_IDS[1])):
        if lp.tokens[p] in lp.top_logprobs[p]:
            assert lp.top_logprobs[p][lp.tokens[p]] == lp.token_logprobs[p]


def test_streamed_echo_equals_the_whole_answer(client):
    body = {"model": "tiny", "prompt": PROMPT_IDS, "max_tokens": 4, "extra_body": {"ignore_eos": True}, **SCORE}
    whole = client.completions.create(**body)
    chunks = list(client.completions.create(stream=True, **body))
    for choice in whole.choices:
        mine = [c for chunk in chunks for c in chunk.choices if c.index == choice.index]
        assert "".join(c.text for c in mine) == choice.text
        tokens = [t for c in mine if c.logprobs for t in c.logprobs.tokens]
        values = [v for c in mine if c.logprobs for v in c.logprobs.token_logprobs]
        offsets = [o for c in mine if c.logprobs for o in c.logprobs.text_offset]
        assert (tokens, values, offsets) == (choice.logprobs.tokens, choice.logprobs.token_logprobs,
                                             choice.logprobs.text_offset)


def test_echo_without_logprobs_and_with_n(client, tokenizer):
    r = client.completions.create(model="tiny", prompt="def parse(", max_tokens=3, n=2, echo=True, temperature=1.0,
                                  seed=3, extra_body={"ignore_eos": True})
    assert all(c.text.startswith("def parse(") and c.logprobs is None for c in r.choices)
    assert sorted(c.index for c in r.choices) == [0, 1]


def test_token_ids_are_scored_verbatim_with_nothing_added(client):
    r = client.completions.create(model="tiny", prompt=[[7]], max_tokens=0, **SCORE)
    assert r.usage.prompt_tokens == 1 and r.choices[0].logprobs.token_logprobs == [None]


def test_max_tokens_0_needs_echo(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="x", max_tokens=0)
    assert err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=0)
    assert err.value.body["param"] == "max_tokens"


def test_tokenizer_info_names_the_special_tokens_and_the_template(tiny_server, tiny_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny_dir)
    info = httpx.get(tiny_server.url + "/tokenizer_info", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    for name in ("eos_token", "bos_token", "pad_token"):
        assert info[name] == getattr(hf, name) and info[f"{name}_id"] == getattr(hf, f"{name}_id")
    assert info["chat_template"] == hf.chat_template
    assert info["model_max_length"] > 0 and info["vocab_size"] == len(hf)
