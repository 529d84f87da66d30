"""Tool calling, Hermes format: the parser matrix (one call, parallel calls, 1-character deltas,
a call in one delta, text before the call, malformed JSON, a block never closed), and a tiny model
with a Hermes-style template served for real, steered into calls by ``tool_choice`` (required
or named: the grammar forces a valid call from a model never trained on tools)."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tenacia.serve.tools import HermesParser, ToolCallParser

from .tiny import ServerProcess, tiny_model, train_tokenizer

CALL_A = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>'
CALL_B = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "the weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"], "additionalProperties": False}}}
UNCLOSABLE = {"type": "function", "function": {"name": "count", "parameters": {
    "type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}}, "required": ["n"]}}}
HERMES = (
    "{% if tools %}<|im_start|>system\nYou may call these tools:\n<tools>\n{% for t in tools %}{{ t | tojson }}\n"
    "{% endfor %}</tools>\nAnswer a call as <tool_call>\n{\"name\": ..., \"arguments\": ...}\n</tool_call><|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    "{% for c in m.tool_calls %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": {{ c.function.arguments | tojson }}}"
    "\n</tool_call>{% endfor %}<|im_end|>\n{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}"
    "\n</tool_response><|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def run(parser: ToolCallParser, pieces: list[str]) -> tuple[str, list[dict]]:
    content, deltas = "", []
    for i, piece in enumerate(pieces):
        c, d = parser.feed(piece, final=i == len(pieces) - 1)
        content, deltas = content + c, deltas + d
    return content, deltas


def merged(deltas: list[dict]) -> list[tuple[str, str]]:
    """Streamed tool_calls deltas -> (name, arguments) per call, as a client joins them."""
    calls: dict[int, list[str]] = {}
    for d in deltas:
        name, args = calls.setdefault(d["index"], ["", ""])
        calls[d["index"]] = [name + d["function"].get("name", ""), args + d["function"]["arguments"]]
    return [tuple(v) for _, v in sorted(calls.items())]


@pytest.mark.parametrize("text, content, calls", [
    (CALL_A, "", [("get_weather", '{"city": "Paris", "days": 3}')]),
    (CALL_A + "\n" + CALL_B, "\n", [("get_weather", '{"city": "Paris", "days": 3}'), ("get_time", '{"zone": "UTC"}')]),
    ("Let me check. " + CALL_A, "Let me check. ", [("get_weather", '{"city": "Paris", "days": 3}')]),
    ('<tool_call>\n{"name": "f", "arguments": {oops}\n</tool_call>', "", [("f", "{oops}")]),  # streamed as written
    ('<tool_call>\n{"name": f}\n</tool_call>', '<tool_call>\n{"name": f}\n</tool_call>', []),
    ("<tool_call>\n{\"name\": \"f\"", "<tool_call>\n{\"name\": \"f\"", []),  # never closed: content
    ("no calls <tool", "no calls <tool", []),
])
@pytest.mark.parametrize("cut", ["whole", "chars", "threes"])
def test_parser_matrix(text, content, calls, cut):
    pieces = {"whole": [text], "chars": list(text), "threes": [text[i:i + 3] for i in range(0, len(text), 3)]}[cut]
    got_content, deltas = run(HermesParser(), pieces)
    assert got_content == content and merged(deltas) == calls
    for k in range(len(calls)):  # id, type and name come first, in one delta
        first = next(d for d in deltas if d["index"] == k)
        assert first["id"].startswith("call_") and first["type"] == "function" and first["function"]["name"]


def test_parallel_false_keeps_the_first_call():
    _, deltas = run(HermesParser(parallel=False), [CALL_A + CALL_B])
    assert [name for name, _ in merged(deltas)] == ["get_weather"]


@pytest.fixture(scope="module")
def hermes(tmp_path_factory):
    from tenacia.data.tokenizer import IM_END, IM_END_ID
    from tenacia.model.hf import save_hf_dir

    out = tmp_path_factory.mktemp("hermes")
    tok = train_tokenizer()
    save_hf_dir(tiny_model(tok.get_vocab_size(), seed=2), out, bos_token_id=None, eos_token_id=IM_END_ID, pad_token_id=None)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"chat_template": HERMES, "eos_token": IM_END}))
    with ServerProcess(out, "--name", "hermes") as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60) as client:
            yield server, client


ASK = [{"role": "user", "content": "Weather in Paris?"}]


def test_a_named_tool_choice_forces_a_valid_call_streamed_as_whole(hermes):
    _, client = hermes
    body = {"model": "hermes", "messages": ASK, "tools": [WEATHER, TIME], "max_tokens": 80, "temperature": 0.0,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    whole = client.chat.completions.create(**body).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.content is None
    (call,) = whole.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    chunks = list(client.chat.completions.create(stream=True, **body))
    deltas = [t.model_dump(exclude_none=True) for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert merged(deltas) == [("get_weather", call.function.arguments)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # the arguments streamed as they were generated, in many events, not as one whole at the end
    fragments = [d["function"]["arguments"] for d in deltas if "id" not in d and d["function"]["arguments"]]
    assert len(fragments) >= 4 and all(len(f) < len(call.function.arguments) for f in fragments), fragments


@pytest.mark.parametrize("parallel", [True, False])
def test_required_makes_calls_of_the_given_tools(hermes, parallel):
    _, client = hermes
    r = client.chat.completions.create(model="hermes", messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       parallel_tool_calls=parallel, max_tokens=120, temperature=1.0, seed=5)
    calls = r.choices[0].message.tool_calls or []
    assert calls and (parallel or len(calls) == 1), r.choices[0]
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), tools[call.function.name])


def test_tool_results_round_trip_through_the_template(hermes):
    server, client = hermes
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "days": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    text = httpx.post(server.url + "/detokenize", json={"tokens": httpx.post(
        server.url + "/tokenize", json={"messages": history}).json()["tokens"]}).json()["prompt"]
    assert '{"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}' in text
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in text
    r = client.chat.completions.create(model="hermes", messages=history, tools=[WEATHER], max_tokens=4,
                                       tool_choice="none", extra_body={"ignore_eos": True})
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "length"


def test_bad_tool_requests_are_400s(hermes, client):
    _, hermes_client = hermes
    with pytest.raises(openai.BadRequestError) as err:  # the tiny server's template has no tools
        client.chat.completions.create(model="tiny", messages=ASK, tools=[WEATHER], max_tokens=2)
    assert err.value.body["param"] == "tools" and "no tool support" in err.value.body["message"]
    for kwargs, param in [({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
                          ({"tool_choice": "sometimes"}, "tool_choice"),
                          ({"tools": [{"type": "function"}]}, "tools[0]"),
                          ({"tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
                          ({"tools": [WEATHER, UNCLOSABLE], "tool_choice": "required"}, "tools[1].function.parameters")]:
        with pytest.raises(openai.BadRequestError) as err:
            hermes_client.chat.completions.create(**{"model": "hermes", "messages": ASK, "tools": [WEATHER],
                                                     "max_tokens": 2, **kwargs})
        assert err.value.body["param"] == param, (kwargs, err.value.body)
