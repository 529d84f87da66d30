"""Forced tool calls in every format: each format's grammar accepts exactly its own syntax (the
tokens of a call, checked with llguidance against the tiny tokenizer), and the Mistral format
through a real server: a tiny model whose template is Mistral's (the format found from it),
forced into calls by ``tool_choice``; the streamed deltas join to the whole answer's calls, and
no markup reaches the content. (Hermes is served in ``test_tools.py``.)"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tenacia.serve.engine.grammar import Grammars
from tenacia.serve.tools import make_parser, tool_grammar

from .test_tool_parsers import HERMES_A, HERMES_B, LLAMA_A, LLAMA_B, MISTRAL_A, MISTRAL_B
from .test_tools import ASK, TIME, WEATHER, merged
from .tiny import ServerProcess, tiny_model, train_tokenizer
from .tool_templates import MISTRAL

W_ARGS = '{"city": "Paris", "days": 3}'
CALLS = {"hermes": (HERMES_A, "\n", HERMES_B), "llama3_json": (LLAMA_A, "; ", LLAMA_B),
         "mistral": ("[TOOL_CALLS][" + MISTRAL_A, ", ", MISTRAL_B + "]")}


def accepts(grammars: Grammars, grammar: str, text: str) -> bool:
    """Whether ``text``, tokenized, is a complete sentence of ``grammar``."""
    matcher = grammars.matcher(grammar)
    return all(matcher.consume_token(t) for t in grammars.tokenizer.encode(text).ids) and matcher.is_accepting()


@pytest.mark.parametrize("fmt", sorted(CALLS))
def test_each_format_s_grammar_takes_its_own_calls_only(fmt, tokenizer):
    grammars = Grammars(tokenizer, tokenizer.get_vocab_size(), frozenset())
    first, sep, second = CALLS[fmt]
    one = first + ("]" if fmt == "mistral" else "")
    both = first + sep + second
    required, named = (tool_grammar(fmt, [WEATHER, TIME], choice, True) for choice in ("required", "get_weather"))
    assert accepts(grammars, required, one) and accepts(grammars, required, both) and accepts(grammars, named, one)
    assert not accepts(grammars, named, both), "a named choice is one call"
    assert not accepts(grammars, named, one.replace('"Paris"', '"Paris, France"')), "city has maxLength 8"
    for other in set(CALLS) - {fmt}:
        assert not accepts(grammars, required, CALLS[other][0] + ("]" if other == "mistral" else ""))
    content, deltas = make_parser(fmt).feed(both, final=True)
    assert content.strip() == "" and [n for n, _ in merged(deltas)] == ["get_weather", "get_time"]


def test_a_v11_mistral_template_forces_v11_calls(tokenizer):
    grammars = Grammars(tokenizer, tokenizer.get_vocab_size(), frozenset())
    template = "{{ '[TOOL_CALLS]' + call.function.name + '[ARGS]' + call.function.arguments }}"
    required = tool_grammar("mistral", [WEATHER, TIME], "required", True, template)
    named = tool_grammar("mistral", [WEATHER, TIME], "get_weather", True, template)
    one = "[TOOL_CALLS]get_weather[ARGS]" + W_ARGS
    both = one + '[TOOL_CALLS]get_time[ARGS]{"zone": "UTC"}'
    assert accepts(grammars, required, one) and accepts(grammars, required, both) and accepts(grammars, named, one)
    assert not accepts(grammars, named, both) and not accepts(grammars, required, CALLS["mistral"][0] + "]")
    assert not accepts(grammars, named, one.replace('"Paris"', '"Paris, France"')), "city has maxLength 8"
    content, deltas = make_parser("mistral").feed(both, final=True)
    assert content == "" and [n for n, _ in merged(deltas)] == ["get_weather", "get_time"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tenacia.data.tokenizer import IM_END, IM_END_ID
    from tenacia.model.hf import save_hf_dir

    out = tmp_path_factory.mktemp("mistral")
    tok = train_tokenizer()
    save_hf_dir(tiny_model(tok.get_vocab_size(), seed=2), out, bos_token_id=None, eos_token_id=IM_END_ID, pad_token_id=None)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"chat_template": MISTRAL, "eos_token": IM_END}))
    with ServerProcess(out, "--name", "tools") as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60) as client:
            yield "mistral", client


def test_a_forced_call_streams_as_it_answers_whole(served):
    fmt, client = served
    body = {"model": "tools", "messages": ASK, "tools": [WEATHER, TIME], "max_tokens": 80, "temperature": 0.0,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    whole = client.chat.completions.create(**body).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.content is None, whole
    (call,) = whole.message.tool_calls
    assert call.function.name == "get_weather"
    assert (len(call.id) == 9 and call.id.isalnum()) if fmt == "mistral" else call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    chunks = [c for c in client.chat.completions.create(stream=True, **body) if c.choices]
    deltas = [t.model_dump(exclude_none=True) for c in chunks for t in c.choices[0].delta.tool_calls or []]
    assert merged(deltas) == [("get_weather", call.function.arguments)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_required_makes_parallel_calls_of_the_given_tools(served):
    _, client = served
    r = client.chat.completions.create(model="tools", messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       max_tokens=120, temperature=1.0, seed=5)
    calls = r.choices[0].message.tool_calls or []
    assert calls, r.choices[0]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
