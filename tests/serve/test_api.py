"""The OpenAI API of a real server process, through the official ``openai`` client."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from .conftest import API_KEY, MAX_BODY_BYTES, MAX_PROMPT_TOKENS, MAX_TOKENS_LIMIT

CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Write a function."}]
GREEDY = {"temperature": 0.0}
NO_EOS = {"ignore_eos": True}  # vLLM's extension: random weights would otherwise stop anywhere


def test_models_list(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert models[0].owned_by == "tenacia"


def test_chat_counts_usage_with_the_models_template(client, tiny_dir):
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(tiny_dir).apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)
    want_prompt = len(encoded["input_ids"])
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, extra_body=NO_EOS, **GREEDY)
    assert r.object == "chat.completion"
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (want_prompt, 12, want_prompt + 12)


def test_chat_stream_equals_whole_answer_and_ends_with_usage(client):
    whole = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=16, extra_body=NO_EOS, **GREEDY)
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}, extra_body=NO_EOS, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_a_chat_stream_opens_with_its_first_token(tiny_server):
    """The role chunk is written together with the first token's (as vLLM's server does), so a
    client that times the first chunk (``vllm bench serve``) measures the time to the first
    token: the first piece read off the socket holds both events."""
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 4, "stream": True, **GREEDY, **NO_EOS}
    with httpx.stream("POST", tiny_server.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        first = next(r.iter_raw()).decode()
    events = [json.loads(line[6:]) for line in first.split("\n\n") if line.startswith("data: {")]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(events) >= 2 and events[1]["choices"][0]["delta"]["content"]


def test_chat_stream_without_usage_option_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, stream=True,
                                                 extra_body=NO_EOS))
    assert all(c.choices for c in chunks)


def test_completions_whole_and_streamed(client):
    whole = client.completions.create(model="tiny", prompt="def parse(", max_tokens=10, extra_body=NO_EOS, **GREEDY)
    assert whole.object == "text_completion" and whole.usage.completion_tokens == 10
    chunks = list(client.completions.create(model="tiny", prompt="def parse(", max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}, extra_body=NO_EOS, **GREEDY))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == 10


def test_completions_take_token_ids_and_several_prompts(client):
    ids = client.completions.create(model="tiny", prompt=[100, 200, 300], max_tokens=3, extra_body=NO_EOS, **GREEDY)
    assert ids.usage.prompt_tokens == 3
    many = client.completions.create(model="tiny", prompt=["a", "import os"], n=2, max_tokens=3, extra_body=NO_EOS)
    assert sorted(c.index for c in many.choices) == [0, 1, 2, 3]
    assert many.usage.completion_tokens == 12


def test_stop_string_ends_the_answer_before_it(client):
    full = client.completions.create(model="tiny", prompt="class A:", max_tokens=30, extra_body=NO_EOS, **GREEDY)
    text = full.choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    r = client.completions.create(model="tiny", prompt="class A:", max_tokens=30, stop=[stop], extra_body=NO_EOS, **GREEDY)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == text[:text.index(stop)]
    streamed = client.completions.create(model="tiny", prompt="class A:", max_tokens=30, stop=stop, stream=True,
                                         extra_body=NO_EOS, **GREEDY)
    assert "".join(c.choices[0].text for c in streamed) == r.choices[0].text


def test_seed_gives_the_same_tokens_while_other_requests_run(client):
    def seeded() -> str:
        return client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=24, temperature=1.0, seed=42,
                                              extra_body=NO_EOS).choices[0].message.content

    alone = seeded()
    results: dict[str, str] = {}

    def other(i: int) -> None:
        r = client.completions.create(model="tiny", prompt=f"noise {i} " * (i + 1), max_tokens=40 + 7 * i,
                                      temperature=1.0, extra_body=NO_EOS)
        results[f"o{i}"] = r.choices[0].text

    threads = [threading.Thread(target=other, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    results["seeded"] = seeded()
    for t in threads:
        t.join(60)
    assert len(results) == 4
    assert results["seeded"] == alone
    different = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=24, temperature=1.0, seed=43,
                                               extra_body=NO_EOS).choices[0].message.content
    assert different != alone


def test_n_choices(client):
    r = client.chat.completions.create(model="tiny", messages=CHAT, n=3, max_tokens=8, temperature=1.0, seed=1,
                                       extra_body=NO_EOS)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3
    assert r.usage.completion_tokens == 24


def test_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=5, logprobs=True, top_logprobs=3,
                                       extra_body=NO_EOS, **GREEDY)
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    for item in content:
        tops = [t.logprob for t in item.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert item.logprob == pytest.approx(tops[0], abs=1e-5)  # greedy picks the most likely token
    assert "".join(item.token for item in content) == r.choices[0].message.content
    c = client.completions.create(model="tiny", prompt="x = ", max_tokens=4, logprobs=2, extra_body=NO_EOS)
    assert len(c.choices[0].logprobs.token_logprobs) == 4 and all(len(t) == 2 for t in c.choices[0].logprobs.top_logprobs)


def test_unknown_fields_are_tolerated(client):
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2, user="someone",
                                       extra_body={"metadata": {"a": 1}, "some_future_field": [1, 2]})
    assert r.choices[0].message.content is not None


@pytest.mark.parametrize("kwargs, param", [
    ({"max_tokens": "ten"}, "max_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 5.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"n": 0}, "n"),
    ({"max_tokens": MAX_TOKENS_LIMIT + 1}, "max_tokens"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "user", "content": "word " * (2 * MAX_PROMPT_TOKENS)}]}, "messages"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"presence_penalty": -3}, "presence_penalty"),
])
def test_bad_chat_input_is_400_naming_the_parameter(client, kwargs, param):
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**body)
    assert err.value.status_code == 400
    assert err.value.body["type"] == "invalid_request_error"
    assert err.value.body["param"] == param and err.value.body["message"]


def test_wrong_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=CHAT, max_tokens=2)
    assert err.value.body["code"] == "model_not_found"


def test_api_key_is_required_on_v1_only(tiny_server):
    with openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="wrong-key", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as err:
            c.models.list()
        assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
    missing = httpx.post(tiny_server.url + "/v1/completions", json={"prompt": "x"})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert httpx.get(tiny_server.url + "/health").json()["status"] == "ok"
    assert httpx.get(tiny_server.url + "/metrics").status_code == 200
    assert "chat.js" in httpx.get(tiny_server.url + "/").text
    script = httpx.get(tiny_server.url + "/static/chat.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


MALFORMED = [
    b"", b"{", b"null", b"[]", b"42", b'"text"', b"\xff\xfe\x00garbage", b'{"messages": null}',
    b'{"messages": [null]}', b'{"messages": [{"role": "user", "content": {"x": 1}}]}',
    b'{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}',
    b'{"messages": [{"role": "user", "content": "hi"}], "stop": [1, 2]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["a", ""]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 99}',
    b'{"messages": [{"role": "user", "content": "hi"}], "seed": "x"}',
    b'{"messages": [{"role": "user", "content": "hi"}], "n": 1000}',
    b'{"messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 2}',
    b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}',
]
MALFORMED_COMPLETIONS = [
    b'{"prompt": []}', b'{"prompt": [[]]}', b'{"prompt": [-1, 5]}', b'{"prompt": [99999999]}',
    b'{"prompt": 7}', b'{"prompt": "x", "max_tokens": 0}', b'{"prompt": "x", "logprobs": 50}',
    b'{"prompt": ' + json.dumps(["a"] * 40).encode() + b"}", b'{"prompt": "x", "best_of": 3}',
]


def test_malformed_and_oversized_requests_never_5xx(tiny_server):
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=tiny_server.url, headers=headers, timeout=30) as http:
        for body in MALFORMED:
            r = http.post("/v1/chat/completions", content=body)
            assert r.status_code == 400, (body, r.status_code, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"
        for body in MALFORMED_COMPLETIONS:
            r = http.post("/v1/completions", content=body)
            assert r.status_code == 400, (body, r.status_code, r.text)
        big = b'{"prompt": "' + b"a" * MAX_BODY_BYTES + b'"}'
        assert http.post("/v1/completions", content=big).status_code == 413

        def chunks():  # no Content-Length: the limit must hold for a streamed body too
            for _ in range(MAX_BODY_BYTES // 1024 + 2):
                yield b" " * 1024

        r = http.post("/v1/completions", content=chunks())
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        assert http.get("/v1/nowhere").status_code == 404
        assert http.get("/v1/chat/completions").status_code == 405
        assert http.get("/health").status_code == 200
        ok = http.post("/v1/completions", json={"prompt": "still alive", "max_tokens": 2})
        assert ok.status_code == 200


def test_metrics_report_latencies_queues_and_tokens(client, tiny_server):
    client.completions.create(model="tiny", prompt="metrics", max_tokens=3, extra_body=NO_EOS)
    text = httpx.get(tiny_server.url + "/metrics").text
    for name in ("tenacia_time_to_first_token_seconds_bucket", "tenacia_inter_token_latency_seconds_bucket",
                 "tenacia_requests_running", "tenacia_requests_waiting", "tenacia_generation_tokens_total",
                 "tenacia_prompt_tokens_total", "tenacia_kv_cache_usage_ratio"):
        assert name in text
    generated = next(line for line in text.splitlines() if line.startswith("tenacia_generation_tokens_total"))
    assert float(generated.split()[-1]) >= 3


def test_a_repeated_prompt_start_is_served_from_the_prefix_cache(client, tiny_server):
    def hits() -> float:
        text = httpx.get(tiny_server.url + "/metrics").text
        return float(next(line for line in text.splitlines()
                          if line.startswith("tenacia_prefix_cache_hits_tokens ")).split()[-1])

    system = {"role": "system", "content": "You answer in one short sentence, and you always say why. " * 3}
    first = client.chat.completions.create(model="tiny", messages=[system, {"role": "user", "content": "hi"}],
                                           max_tokens=4, temperature=0.0, extra_body=NO_EOS)
    before = hits()
    again = client.chat.completions.create(model="tiny", messages=[system, {"role": "user", "content": "hi"}],
                                           max_tokens=4, temperature=0.0, extra_body=NO_EOS)
    assert hits() - before >= 16  # at least one whole block of the shared system prompt
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.prompt_tokens == first.usage.prompt_tokens  # usage counts every prompt token


def test_partial_character_tokens_keep_their_own_top_logprob_entries():
    """Byte tokens that are only part of a UTF-8 character all decode to U+FFFD; the completions
    endpoint's top_logprobs is a dict keyed by token, so they are named by their bytes (as OpenAI
    does) and never collapse into one entry."""
    from tenacia.serve.engine.sequence import TokenLogprob
    from tenacia.serve.responses import Shape, TokenText

    from .tiny import train_tokenizer

    tok = train_tokenizer()
    tt = TokenText(tok)
    partial = [i for i in range(tok.get_vocab_size()) if tt.text(i) == "\ufffd"][:2]
    assert len(partial) == 2, "the byte-level vocabulary has tokens for lone high bytes"
    keys = [tt.key(i) for i in partial]
    assert keys[0] != keys[1] and all(k.startswith("bytes:\\x") for k in keys), keys
    whole = next(i for i in range(tok.get_vocab_size()) if tt.text(i).isalpha())
    assert tt.key(whole) == tt.text(whole)
    shape = Shape(chat=False, model="tiny", token_text=tt, want_logprobs=True)
    out = shape.logprobs([TokenLogprob(token_id=partial[0], logprob=-1.0, top=[(partial[0], -1.0), (partial[1], -2.0)]),
                          TokenLogprob(token_id=whole, logprob=-0.5, top=[(whole, -0.5)])])
    assert out["tokens"] == [keys[0], tt.text(whole)]
    assert len(out["top_logprobs"][0]) == 2
    assert out["text_offset"] == [0, 1]  # offsets count the text, U+FFFD is one character


def test_tokenize_and_detokenize_as_vllm(tiny_server, tiny_dir):
    """vLLM's /tokenize (a prompt, or chat messages through the template) and /detokenize, outside
    /v1/ as in vLLM; plus /version."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny_dir)
    with httpx.Client(base_url=tiny_server.url, timeout=30) as http:
        r = http.post("/tokenize", json={"model": "tiny", "prompt": "def decode(self, s):"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tokens"] == hf("def decode(self, s):")["input_ids"]
        assert body["count"] == len(body["tokens"]) and body["max_model_len"] > 0
        back = http.post("/detokenize", json={"tokens": body["tokens"]}).json()
        assert back == {"prompt": "def decode(self, s):"}

        chat = http.post("/tokenize", json={"messages": CHAT}).json()
        assert chat["tokens"] == hf.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)["input_ids"]

        for payload, status, param in [({"prompt": "x", "messages": CHAT}, 400, "prompt"), ({}, 400, "prompt"),
                                       ({"prompt": 7}, 400, "prompt"), ({"model": "other", "prompt": "x"}, 404, "model")]:
            r = http.post("/tokenize", json=payload)
            assert (r.status_code, r.json()["error"]["param"]) == (status, param), r.text
        r = http.post("/detokenize", json={"tokens": [1, 10**9]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"
        assert http.post("/detokenize", json={"tokens": "1 2"}).status_code == 400
        assert http.get("/version").json()["version"]
