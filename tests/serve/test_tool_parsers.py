"""The tool-call parsers of every format as pure functions, in the style of vLLM's parser tests:
one call, parallel calls, text before a call, malformed JSON, a call never closed; each text fed
whole, cut at every point in two, cut into 1-character pieces and into random pieces (fixed seed).
However it is cut, the streamed deltas concatenate to the whole answer's calls (ids and names
first, then arguments), and the content is the same, with none of a call's markup in it. And
the arguments of a call stream while they are written, not once the call is over."""

from __future__ import annotations

import random

import pytest

from tenacia.config import ConfigError
from tenacia.serve.config import ServerConfig
from tenacia.serve.tools import FORMATS, make_parser, tool_format

W = ("get_weather", '{"city": "Paris", "days": 3}')
T = ("get_time", '{"zone": "UTC"}')
HERMES_A = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>'
HERMES_B = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
LLAMA_A = '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}'
LLAMA_B = '{"name": "get_time", "parameters": {"zone": "UTC"}}'
MISTRAL_A = '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}'
MISTRAL_B = '{"name": "get_time", "arguments": {"zone": "UTC"}}'

# format, text, content, calls
CASES = [
    ("hermes", HERMES_A, "", [W]),
    ("hermes", HERMES_A + "\n" + HERMES_B, "\n", [W, T]),
    ("hermes", "Let me check. " + HERMES_A, "Let me check. ", [W]),
    # arguments already streaming when they turn out malformed: the call stands, as written
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {oops}\n</tool_call>', "", [("f", "{oops}")]),
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": "x\n</tool_call> after', " after", [("f", '{"a": "x\n')]),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa', "", [("get_weather", '{"city": "Pa')]),
    ("hermes", '<tool_call>\n{name: f}\n</tool_call>', '<tool_call>\n{name: f}\n</tool_call>', []),
    # read whole: the name after the arguments, the arguments as a JSON string
    ("hermes", '<tool_call>\n{"arguments": {"zone":"UTC"}, "name": "get_time"}\n</tool_call>', "", [T]),
    ("hermes", '<tool_call>\n{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\"}"}\n</tool_call>', "", [T]),
    ("hermes", '<tool_call>\n{"name": "f"', '<tool_call>\n{"name": "f"', []),
    ("hermes", "no calls <tool", "no calls <tool", []),
    ("llama3_json", LLAMA_A, "", [W]),
    ("llama3_json", "<|python_tag|>" + LLAMA_A, "", [W]),
    ("llama3_json", " \n" + LLAMA_A + "; " + LLAMA_B + "\n", "", [W, T]),
    ("llama3_json", LLAMA_A + ";" + LLAMA_B, "", [W, T]),
    ("llama3_json", '{"name": "get_time", "arguments": {"zone": "UTC"}}', "", [T]),  # "arguments" read too
    ("llama3_json", "The weather is fine.", "The weather is fine.", []),
    ("llama3_json", "It is " + LLAMA_A, "It is " + LLAMA_A, []),  # calls only from the answer's start
    ("llama3_json", LLAMA_A + " and more", " and more", [W]),
    ("llama3_json", '{"name": "f", "parameters": {oops}}', "", [("f", "{oops}")]),
    ("llama3_json", '{"name": f, "parameters": {}}', '{"name": f, "parameters": {}}', []),
    ("llama3_json", '{"name": "get_time", "parameters": {"zone": "UTC"}, "x": [1, "}"]}; ' + LLAMA_A, "", [T, W]),
    ("llama3_json", '{"city": "Paris"}', '{"city": "Paris"}', []),  # JSON, but no call
    ("llama3_json", LLAMA_A + '; {"name": "g"', '; {"name": "g"', [W]),  # the second never closed
    ("mistral", "[TOOL_CALLS][" + MISTRAL_A + "]", "", [W]),
    ("mistral", "[TOOL_CALLS] [" + MISTRAL_A + ", " + MISTRAL_B + "]", "", [W, T]),
    ("mistral", "Checking. [TOOL_CALLS][" + MISTRAL_A + "]", "Checking. ", [W]),
    ("mistral", "[TOOL_CALLS][" + MISTRAL_A + "] done", " done", [W]),
    ("mistral", "[TOOL_CALLS][{oops}]", "[TOOL_CALLS][{oops}]", []),
    ("mistral", "[TOOL_CALLS][" + MISTRAL_A + ", {oops}]", ", {oops}]", [W]),
    ("mistral", "[TOOL_CALLS]" + MISTRAL_A, "[TOOL_CALLS]" + MISTRAL_A, []),  # no list
    ("mistral", "no calls [TOOL", "no calls [TOOL", []),
    # v11 (2025): one call a tag
    ("mistral", "[TOOL_CALLS]get_weather[ARGS]" + W[1], "", [W]),
    ("mistral", "Checking. [TOOL_CALLS]get_weather[ARGS]" + W[1] + "[TOOL_CALLS]get_time[ARGS]" + T[1], "Checking. ", [W, T]),
    ("mistral", "[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]" + W[1], "", [W]),
    ("mistral", "[TOOL_CALLS]get_weather[ARGS]" + W[1] + " done", " done", [W]),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Par', "", [("get_weather", '{"city": "Par')]),
    ("mistral", "[TOOL_CALLS]get weather[ARGS]{}", "[TOOL_CALLS]get weather[ARGS]{}", []),
    ("mistral", "[TOOL_CALLS]get_weather{}", "[TOOL_CALLS]get_weather{}", []),
    # pythonic (Llama 3.2 / 4)
    ("pythonic", '[get_weather(city="Paris", days=3)]', "", [W]),
    ("pythonic", ' [get_weather(city="Paris", days=3), get_time(zone=\'UTC\')]\n', "", [W, T]),
    ("pythonic", '<|python_start|>[get_weather(city="Paris", days=3)]<|python_end|>', "", [W]),
    ("pythonic", '[f(a=[1, (2, 3)], b={"k": None}, c=true, d="(])")] Done.', "Done.",
     [("f", '{"a": [1, [2, 3]], "b": {"k": null}, "c": true, "d": "(])"}')]),
    ("pythonic", "[get_time()]", "", [("get_time", "{}")]),
    ("pythonic", "The weather is fine.", "The weather is fine.", []),
    ("pythonic", "[1, 2, 3]", "[1, 2, 3]", []),
    ("pythonic", '[get_weather("Paris")]', '[get_weather("Paris")]', []),  # positional: no call
    ("pythonic", '[get_weather(city="Paris", days=3), oops(]', ', oops(]', [W]),
    ("pythonic", '[get_weather(city="Pa', "", [("get_weather", '{"city": "Pa')]),  # cut: the call stands
    ("pythonic", '[f(s="a\\"b\\n\\u00e9", t=\'x\\x41\', u="""q""", v="")]', "",
     [("f", '{"s": "a\\"b\\né", "t": "xA", "u": "q", "v": ""}')]),  # escapes decoded, JSON's written
    ("pythonic", "[f(a=[true, null], b=-1.5,)]", "", [("f", '{"a": [true, null], "b": -1.5}')]),
    # the call opened, then its arguments are no Python literals: it stands, the rest is content
    ("pythonic", "[get_weather(city=Paris)] ok", "Paris)] ok", [("get_weather", '{"city": ')]),
    ("pythonic", "[f(a=1, a=2)]", "a=2)]", [("f", '{"a": 1')]),
    ("pythonic", '[f(a="x" + "y")]', '+ "y")]', [("f", '{"a": "x"')]),
    ("pythonic", "[f(a==1)]", "[f(a==1)]", []),  # a comparison, not a keyword: no call
]
MARKUP = {"hermes": ("<tool_call>", "</tool_call>"), "llama3_json": ("<|python_tag|>", '"name"'),
          "mistral": ("[TOOL_CALLS]", '"name"', "[ARGS]"), "pythonic": ("<|python_start|>", "(")}


def run(fmt: str, pieces: list[str], parallel: bool = True) -> tuple[str, list[dict], list[dict]]:
    """(content, deltas, the parser's calls) of ``pieces`` fed one by one, the last as final."""
    parser = make_parser(fmt, parallel)
    content, deltas = "", []
    for i, piece in enumerate(pieces):
        c, d = parser.feed(piece, final=i == len(pieces) - 1)
        content, deltas = content + c, deltas + d
    return content, deltas, parser.calls


def joined(deltas: list[dict]) -> list[tuple[str, str, str]]:
    """Streamed deltas -> (id, name, arguments) per call, as a client joins them, checking the
    shape: a call opens with index, id, type and name and empty arguments, then only arguments."""
    calls: dict[int, list[str]] = {}
    for d in deltas:
        if d["index"] not in calls:
            assert d["index"] == len(calls), "calls are numbered in order"
            assert d["type"] == "function" and d["function"]["name"] and d["function"]["arguments"] == ""
            calls[d["index"]] = [d["id"], d["function"]["name"], ""]
        else:
            assert set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
            calls[d["index"]][2] += d["function"]["arguments"]
    return [tuple(v) for _, v in sorted(calls.items())]


def cuts(text: str, seed: int) -> list[list[str]]:
    """Every cut in two, 1-character pieces, and 100 random cuts into 2..12 pieces."""
    rng = random.Random(seed)
    out = [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text) or [""]]
    for _ in range(100):
        points = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 11)))) if len(text) > 1 else []
        out.append([text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)])
    return out


@pytest.mark.parametrize("fmt, text, content, calls", CASES)
def test_every_cut_gives_the_whole_answer(fmt, text, content, calls):
    whole_content, whole_deltas, whole_calls = run(fmt, [text])
    assert whole_content == content
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in whole_calls] == calls
    assert [(n, a) for _, n, a in joined(whole_deltas)] == calls
    for pieces in cuts(text, seed=len(text)):
        got_content, deltas, got_calls = run(fmt, pieces)
        assert got_content == content, pieces
        streamed = joined(deltas)
        assert [(n, a) for _, n, a in streamed] == calls, pieces
        assert [i for i, _, _ in streamed] == [c["id"] for c in got_calls], "the ids streamed are the calls' ids"
        if calls and not content.strip():
            assert not any(m in got_content for m in MARKUP[fmt])


@pytest.mark.parametrize("fmt, text", [("hermes", HERMES_A + HERMES_B), ("llama3_json", LLAMA_A + ";" + LLAMA_B),
                                       ("mistral", "[TOOL_CALLS][" + MISTRAL_A + "," + MISTRAL_B + "]"),
                                       ("mistral", "[TOOL_CALLS]get_weather[ARGS]" + W[1] + "[TOOL_CALLS]get_time[ARGS]" + T[1]),
                                       ("pythonic", '[get_weather(city="Paris", days=3), get_time(zone="UTC")]')])
def test_parallel_false_keeps_the_first_call(fmt, text):
    for pieces in ([text], list(text)):
        _, deltas, calls = run(fmt, pieces, parallel=False)
        assert [n for _, n, _ in joined(deltas)] == ["get_weather"] and len(calls) == 1


@pytest.mark.parametrize("fmt, text", [("hermes", HERMES_A), ("llama3_json", LLAMA_A), ("mistral", "[TOOL_CALLS][" + MISTRAL_A + "]"),
                                       ("mistral", "[TOOL_CALLS]get_weather[ARGS]" + W[1])])
def test_arguments_stream_while_they_are_written(fmt, text):
    """Fed a character at a time: the call opens once its name and the start of its arguments
    (v11 Mistral: its ``[ARGS]``) have arrived, then each character of the arguments is a fragment of its own, sent before
    the call's closing markup arrives."""
    parser, seen, opened_at, fragments = make_parser(fmt), "", None, []
    for i, ch in enumerate(text):
        seen += ch
        _, deltas = parser.feed(ch, final=i == len(text) - 1)
        for d in deltas:
            if "id" in d:
                opened_at = len(seen)
            else:
                fragments.append((len(seen), d["function"]["arguments"]))
    args_start = text.index(W[1])
    assert opened_at in (args_start, args_start + 1), "the call opens by the arguments' first character"
    assert fragments == [(args_start + k + 1, c) for k, c in enumerate(W[1])]


def test_pythonic_arguments_stream_while_they_are_written():
    """Fed a character at a time: the call opens at its first keyword, a string value streams a
    character at a time (escapes once whole), any other value when it ends; only the closing
    brace waits for the call's ")"."""
    text = '[get_weather(city="Pa\\u00e9s", days=3)]'
    parser, seen, fragments, opened_at = make_parser("pythonic"), "", [], None
    for i, ch in enumerate(text):
        seen += ch
        for d in parser.feed(ch, final=i == len(text) - 1)[1]:
            if "id" in d:
                opened_at = seen
            else:
                fragments.append((seen, d["function"]["arguments"]))
    assert opened_at == '[get_weather(city="'
    at = ['[get_weather(city="', '[get_weather(city="P', '[get_weather(city="Pa', '[get_weather(city="Pa\\u00e9',
          '[get_weather(city="Pa\\u00e9s', '[get_weather(city="Pa\\u00e9s"', '[get_weather(city="Pa\\u00e9s", days=3',
          '[get_weather(city="Pa\\u00e9s", days=3)']
    assert fragments == [(at[0], "{"), (at[0], '"city": '), (at[1], '"'), (at[1], "P"), (at[2], "a"), (at[3], "é"),
                         (at[4], "s"), (at[5], '"'), (at[6], ', "days": '), (at[7], "3"), (at[7], "}")]


def test_a_v11_mistral_call_keeps_the_id_the_model_wrote():
    _, deltas, calls = run("mistral", ["[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]" + W[1]])
    assert calls[0]["id"] == deltas[0]["id"] == "a1B2c3D4e"


def test_pythonic_calls_cannot_be_forced():
    from tenacia.serve.engine.sequence import InvalidRequest
    from tenacia.serve.tools import tool_grammar

    from .test_tools import WEATHER
    with pytest.raises(InvalidRequest) as err:
        tool_grammar("pythonic", [WEATHER], "required", True)
    assert err.value.param == "tool_choice" and "pythonic" in str(err.value)


def test_ids_unique_and_in_the_format_s_shape():
    _, _, calls = run("mistral", ["[TOOL_CALLS][" + MISTRAL_A + ", " + MISTRAL_B + "]"])
    assert all(len(c["id"]) == 9 and c["id"].isalnum() for c in calls) and calls[0]["id"] != calls[1]["id"]
    for fmt, text in (("hermes", HERMES_A + HERMES_B), ("llama3_json", LLAMA_A + ";" + LLAMA_B)):
        _, _, calls = run(fmt, [text])
        assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]


@pytest.mark.parametrize("setting, template, fmt", [
    ("auto", "{{ '[TOOL_CALLS]' }}{{ tools }}", "mistral"),
    ("auto", "{% if tools %}<tool_call>{% endif %}", "hermes"),
    ("auto", "{{ '<|python_tag|>' }}{{ tools }}", "llama3_json"),
    ("auto", "{% if message.role == 'ipython' %}{{ tools }}{% endif %}", "llama3_json"),
    ("auto", "{{ tools }}", "hermes"),
    ("auto", "[func_name1(params_name1=params_value1)] {{ tools }} {% if message.role == 'ipython' %}{% endif %}", "pythonic"),
    ("auto", "{{ '<|python_start|>' }}{{ tools }}", "pythonic"),
    ("mistral", "{% if tools %}<tool_call>{% endif %}", "mistral"),
])
def test_the_format_comes_from_the_setting_or_the_template(setting, template, fmt):
    assert tool_format(setting, template) == fmt


def test_a_bad_tool_parser_setting_names_the_allowed_values():
    with pytest.raises(ConfigError) as err:
        ServerConfig(tool_parser="qwen")
    assert "tool_parser" in str(err.value) and all(repr(f) in str(err.value) for f in FORMATS)
