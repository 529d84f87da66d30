"""Tool calls and results sent back in a conversation render through the model's template in its
own format (Llama 3 JSON, Mistral), and the format's parser reads the rendered call back as the
call that was sent: the round trip a client makes when it returns ``role: tool`` results."""

from __future__ import annotations

import json

import pytest

from tenacia.serve.chat import ChatTemplate
from tenacia.serve.engine.sequence import InvalidRequest
from tenacia.serve.tools import make_parser, tool_format

from .test_tools import HERMES
from .tool_templates import LLAMA3, MISTRAL

ARGS = '{"zone": "Europe/Paris", "note": "<café & co>"}'  # key order and <>& kept, as transformers renders
CALLS = [{"id": "a1B2c3D4e", "type": "function", "function": {"name": "get_time", "arguments": ARGS}},
         {"id": "Z9y8X7w6v", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Nice"}'}}]
HISTORY = [{"role": "user", "content": "Time and weather?"},
           {"role": "assistant", "content": None, "tool_calls": CALLS},
           {"role": "tool", "tool_call_id": "a1B2c3D4e", "content": "12:00"},
           {"role": "tool", "tool_call_id": "Z9y8X7w6v", "content": "sunny"}]
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("get_time", "get_weather")]


@pytest.mark.parametrize("template, fmt, start, end, results", [
    (HERMES, "hermes", "<|im_start|>assistant\n", "<|im_end|>", ["<tool_response>\n12:00\n</tool_response>"]),
    (LLAMA3, "llama3_json", "assistant<|end_header_id|>\n\n", "<|eom_id|>", ["ipython<|end_header_id|>\n\n12:00<|eot_id|>"]),
    (MISTRAL, "mistral", "[/INST]", "</s>", ['[TOOL_RESULTS] {"content": "12:00", "call_id": "a1B2c3D4e"}']),
])
def test_calls_and_results_round_trip(template, fmt, start, end, results):
    assert tool_format("auto", template) == fmt
    text = ChatTemplate(template).render(HISTORY, add_generation_prompt=True, tools=TOOLS)
    for result in results:
        assert result in text
    turn = text[text.index(start) + len(start):]  # the assistant's turn of calls, as the model would write it
    content, _ = (parser := make_parser(fmt)).feed(turn[:turn.index(end)], final=True)
    assert content.strip() == ""
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in parser.calls] == \
        [(c["function"]["name"], c["function"]["arguments"]) for c in CALLS]


def test_mistral_template_refuses_ids_it_cannot_take():
    bad = [HISTORY[0], {**HISTORY[1], "tool_calls": [{**CALLS[0], "id": "call_123"}]}]
    with pytest.raises(InvalidRequest, match="length 9"):
        ChatTemplate(MISTRAL).render(bad, tools=TOOLS)


def test_tojson_keeps_what_the_model_wrote():
    rendered = ChatTemplate("{% for m in messages %}{{ m.tool_calls[0].function.arguments | tojson }}{% endfor %}").render(
        [HISTORY[1]], add_generation_prompt=False)
    assert rendered == ARGS and json.loads(rendered) == json.loads(ARGS)
