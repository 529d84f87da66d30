"""logit_bias and vLLM's min_p, repetition_penalty, min_tokens and stop_token_ids through a real
server and the official ``openai`` client (vLLM's fields go in ``extra_body``)."""

from __future__ import annotations

import threading

import openai
import pytest
from tokenizers import Tokenizer

from tenacia.data.tokenizer import IM_END_ID

GREEDY = {"temperature": 0.0}
PROMPT = "import json\nclass Decoder(object):"


@pytest.fixture(scope="module")
def tok(tiny_dir) -> Tokenizer:
    return Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))


def complete(client, max_tokens: int = 12, **kw):
    extra = {"ignore_eos": True, **kw.pop("extra_body", {})}
    return client.completions.create(model="tiny", prompt=PROMPT, max_tokens=max_tokens, extra_body=extra,
                                     **{**GREEDY, **kw}).choices[0]


def test_logit_bias_forces_or_bans_a_token(client, tok):
    word = tok.encode(" return").ids
    assert len(word) == 1
    forced = complete(client, logit_bias={str(word[0]): 100})
    assert forced.text == " return" * 12
    plain = complete(client)
    first = tok.encode(plain.text).ids[0]
    banned = complete(client, logit_bias={str(first): -100})
    assert banned.text != plain.text and tok.id_to_token(first) not in tok.encode(banned.text).tokens


def test_min_tokens_holds_back_a_forced_eos(client):
    eos = {str(IM_END_ID): 100}
    at_once = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=20, logit_bias=eos, **GREEDY)
    assert at_once.choices[0].finish_reason == "stop" and at_once.usage.completion_tokens == 1
    assert at_once.choices[0].message.content == ""
    held = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, logit_bias=eos,
                                     extra_body={"min_tokens": 5}, **GREEDY)
    assert held.choices[0].finish_reason == "stop"
    assert held.usage.completion_tokens == 6 and held.choices[0].text  # five tokens, then the EOS


def test_stop_token_ids_end_the_answer_with_stop(client, tok):
    plain = complete(client, max_tokens=16)
    ids = tok.encode(plain.text).ids
    at = next(j for j in range(2, len(ids)) if ids[j] not in ids[:j])
    got = complete(client, max_tokens=16, extra_body={"stop_token_ids": [ids[at]]})
    assert got.finish_reason == "stop" and got.text == tok.decode(ids[:at])
    streamed = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, stream=True, **GREEDY,
                                         extra_body={"ignore_eos": True, "stop_token_ids": [ids[at]]})
    chunks = [c.choices[0] for c in streamed if c.choices]
    assert "".join(c.text for c in chunks) == got.text and chunks[-1].finish_reason == "stop"


def test_min_p_one_and_repetition_penalty(client):
    plain = complete(client, max_tokens=16)
    top_only = complete(client, max_tokens=16, temperature=1.5, seed=3, extra_body={"min_p": 1.0})
    assert top_only.text == plain.text
    assert complete(client, max_tokens=16, extra_body={"repetition_penalty": 1.5}).text != plain.text


def test_seeded_request_is_the_same_beside_requests_using_the_new_fields(client):
    seeded = {"temperature": 1.0, "seed": 42, "logit_bias": {"100": 3},
              "extra_body": {"min_p": 0.05, "repetition_penalty": 1.2, "min_tokens": 2}}
    alone = complete(client, max_tokens=24, **seeded).text
    others = [{"extra_body": {"min_p": 0.3}, "temperature": 0.8},
              {"logit_bias": {"7": -100, "9": 50}, "extra_body": {"stop_token_ids": [9], "min_tokens": 3}},
              {"extra_body": {"repetition_penalty": 0.7}}]
    results: dict[int, str] = {}

    def other(i: int) -> None:
        results[i] = complete(client, max_tokens=30 + 5 * i, **others[i]).text

    threads = [threading.Thread(target=other, args=(i,)) for i in range(len(others))]
    for t in threads:
        t.start()
    crowded = complete(client, max_tokens=24, **seeded).text
    for t in threads:
        t.join(60)
    assert len(results) == len(others)
    assert crowded == alone


@pytest.mark.parametrize("kwargs, param", [
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"-1": 1}}, "logit_bias"),
    ({"logit_bias": {"512": 1}}, "logit_bias"),  # the tiny vocabulary has 512 tokens
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"extra_body": {"min_p": 2}}, "min_p"),
    ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
    ({"extra_body": {"min_tokens": 5}}, "min_tokens"),  # above max_tokens (4)
    ({"extra_body": {"stop_token_ids": [512]}}, "stop_token_ids"),
    ({"extra_body": {"stop_token_ids": ["7"]}}, "stop_token_ids[0]"),
])
@pytest.mark.parametrize("chat", [True, False])
def test_bad_values_are_400_naming_the_field(client, kwargs, param, chat):
    with pytest.raises(openai.BadRequestError) as err:
        if chat:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=4, **kwargs)
        else:
            client.completions.create(model="tiny", prompt="hi", max_tokens=4, **kwargs)
    body = err.value.body
    assert err.value.status_code == 400 and body["type"] == "invalid_request_error"
    assert body["param"] == param and param.split("[")[0] in body["message"]
