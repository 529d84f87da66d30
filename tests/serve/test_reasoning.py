"""Reasoning output: the splitter on every way of cutting a text, and a tiny thinking model (an
R1-style template that opens ``<think>`` for the model; ``</think>`` made likely by
``logit_bias``) served for real: ``reasoning_content`` and ``reasoning`` carry the thinking,
``content`` the rest, streamed deltas concatenate to the whole answer, usage counts the
reasoning tokens."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from tenacia.serve.reasoning import CLOSE, ThinkSplitter, thinks

from .tiny import ServerProcess, tiny_model, train_tokenizer

TEXTS = ["<think>plan a</think>answer", "  <think>x</think>\n\nyes</think>", "no think here", "<thi", "",
         "<think>never closed", "</think>answer", "a<think>b</think>c", "<think></think>", "<think>a</thi"]


def split_whole(text: str, open_already: bool) -> tuple[str, str]:
    """The spec, on a whole text at once."""
    if not open_already:
        head = text.lstrip()
        if not head.startswith("<think>"):
            return "", text
        text = head[len("<think>"):]
    reasoning, sep, content = text.partition(CLOSE)
    return reasoning, content


@pytest.mark.parametrize("open_already", [False, True])
def test_any_cut_gives_the_whole_texts_split(open_already):
    rng = random.Random(0)
    for text in TEXTS:
        for _ in range(50):
            cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
            pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
            splitter = ThinkSplitter(state="think" if open_already else "start")
            got = [splitter.feed(p, final=i == len(pieces) - 1) for i, p in enumerate(pieces)]
            assert ("".join(r for r, _ in got), "".join(c for _, c in got)) == split_whole(text, open_already), pieces


def test_which_templates_think():
    assert thinks("auto", "{{ content.split('</think>')[-1] }}") and not thinks("auto", "plain")
    assert thinks("think", "plain") and not thinks("none", "</think>")
    assert ThinkSplitter.for_prompt("<|im_start|>assistant\n<think>\n").state == "think"


def make_thinking_dir(out):
    from tenacia.data.tokenizer import CHAT_TEMPLATE, IM_END, IM_END_ID
    from tenacia.model.hf import save_hf_dir

    tok = train_tokenizer()
    tok.add_tokens(["<think>", "</think>"])
    save_hf_dir(tiny_model(tok.get_vocab_size(), seed=1), out, bos_token_id=None, eos_token_id=IM_END_ID,
                pad_token_id=None)
    tok.save(str(out / "tokenizer.json"))
    template = (CHAT_TEMPLATE.replace("message['content']", "(message['content'].split('</think>')[-1] "
                                      "if message['role'] == 'assistant' else message['content'])")
                .replace("assistant\\n' }}", "assistant\\n<think>\\n' }}"))
    (out / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "eos_token": IM_END}))
    return out, tok.token_to_id("</think>")


@pytest.fixture(scope="module")
def thinking(tmp_path_factory):
    path, close_id = make_thinking_dir(tmp_path_factory.mktemp("thinking"))
    with ServerProcess(path, "--name", "think") as server:
        yield server, close_id


def test_thinking_goes_to_reasoning_fields_streamed_and_whole(thinking):
    from openai import OpenAI

    server, close_id = thinking
    messages = [{"role": "user", "content": "think first"}]
    sampling = {"max_tokens": 30, "temperature": 1.0, "seed": 7, "logit_bias": {str(close_id): 5.0}}
    with OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60) as client:
        ids = httpx.post(server.url + "/tokenize", json={"messages": messages}).json()["tokens"]
        raw = client.completions.create(model="think", prompt=ids, logprobs=0, extra_body={"ignore_eos": True},
                                        **sampling).choices[0]
        tokens = raw.logprobs.tokens
        assert CLOSE in tokens[:-1], "the bias makes </think> come early; content follows it"
        reasoning, content = raw.text.split(CLOSE, 1)
        body = {"model": "think", "messages": messages, "extra_body": {"ignore_eos": True}, **sampling}
        whole = client.chat.completions.create(**body)
        message = whole.choices[0].message
        assert (message.content, message.reasoning_content, message.reasoning) == (content, reasoning or None,
                                                                                 reasoning or None)
        assert whole.usage.completion_tokens_details.reasoning_tokens == tokens.index(CLOSE) + 1
        chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **body))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert "".join(d.content or "" for d in deltas) == content
        assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == reasoning
        assert "".join(getattr(d, "reasoning", None) or "" for d in deltas) == reasoning
        assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == tokens.index(CLOSE) + 1


def test_a_model_that_does_not_think_has_no_reasoning_fields(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "<think>hi"}], max_tokens=4)
    assert r.choices[0].message.model_extra.get("reasoning_content") is None
    assert r.usage.completion_tokens_details is None
