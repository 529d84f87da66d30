"""``/v1/responses`` through the official client's ``responses.create``, plain and streamed:
string and item input, instructions, text.format, function calls and their outputs, and the
400s (previous_response_id, built-in tools, non-text input)."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from .test_structured import BOUNDED
from .test_tools import WEATHER, hermes  # noqa: F401 (a fixture)

FLAT_WEATHER = {"type": "function", **WEATHER["function"]}


def test_plain_and_streamed_responses_agree(client):
    body = {"model": "tiny", "input": "def parse(", "instructions": "Write Python.", "max_output_tokens": 12,
            "temperature": 0.0}
    whole = client.responses.create(**body)
    assert whole.object == "response" and whole.status == "incomplete"
    assert whole.incomplete_details.reason == "max_output_tokens"
    assert whole.usage.output_tokens == 12 and whole.output[0].type == "message"
    events = list(client.responses.create(stream=True, **body))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.incomplete"
    assert "response.output_item.added" in kinds and "response.output_item.done" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text == events[-1].response.output_text


def test_items_input_and_text_format(client):
    schema = BOUNDED[0]
    r = client.responses.create(model="tiny", input=[{"role": "developer", "content": "JSON only."},
                                                     {"role": "user", "content": [{"type": "input_text", "text": "order?"}]}],
                                text={"format": {"type": "json_schema", "name": "order", "schema": schema, "strict": True}},
                                max_output_tokens=80, temperature=0.7)
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), schema)


@pytest.mark.parametrize("kwargs, param", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
    ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
])
def test_what_cannot_run_is_a_400(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(**{"model": "tiny", "input": "hi", "max_output_tokens": 2, **kwargs})
    assert err.value.body["param"] == param, err.value.body


def test_function_calls_and_their_outputs(hermes):  # noqa: F811
    _, client = hermes
    body = {"model": "hermes", "input": "Weather in Paris?", "tools": [FLAT_WEATHER], "max_output_tokens": 80,
            "tool_choice": {"type": "function", "name": "get_weather"}, "temperature": 0.0}
    whole = client.responses.create(**body)
    (call,) = [item for item in whole.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["function"]["parameters"])
    events = list(client.responses.create(stream=True, **body))
    fragments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(fragments) == call.arguments and events[-1].type == "response.completed"
    assert len(fragments) > 1, "the arguments stream as they are generated"
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == call.arguments
    assert events.index(done) > max(i for i, e in enumerate(events) if e.type == "response.function_call_arguments.delta")
    follow = client.responses.create(model="hermes", tools=[FLAT_WEATHER], max_output_tokens=4, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}], tool_choice="none")
    assert follow.output[0].type == "message"
