"""A streamed ``/v1/responses`` answer opens its items in the order the model wrote them: text,
a call, text after the call (a new message item, never a delta to a message already done), and
the events, read by the official ``openai`` client's ``responses.stream`` (which accumulates
them into a snapshot and raises on an event that addresses an item it does not have), build
exactly the response the stream ends with and the whole (non-streamed) answer. The server's
shaping runs in-process behind an ``httpx.MockTransport``: a tiny model cannot be made to write
text after a call through ``/v1/responses`` (it has no ``logit_bias``, and a forced call ends
the answer)."""

from __future__ import annotations

import json
import random

import httpx
import openai
import pytest

from tenacia.serve.engine.llm_engine import ChoiceDelta
from tenacia.serve.responses import Collected
from tenacia.serve.responses_api import ResponseShape, ResponsesRequest
from tenacia.serve.tools import make_parser

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def answer(text: str, cuts: list[int]) -> tuple[dict, list[dict], ResponseShape]:
    """``text`` cut at ``cuts`` as engine deltas: (the whole response, the stream's events, its shape)."""
    req = ResponsesRequest(model="m", input="hi", tools=[{"type": "function", "name": "get_weather"}])
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    deltas = [ChoiceDelta("r", 0, p, [1], [], "stop" if i == len(pieces) - 1 else None, 3, i + 1)
              for i, p in enumerate(pieces)]
    whole_got, stream_got = (Collected(prompt_tokens=3, tools=lambda: make_parser("hermes")) for _ in range(2))
    for d in deltas:
        whole_got.add([d])
    whole = ResponseShape(req, "m", None).response(whole_got)
    shape = ResponseShape(req, "m", None)
    sse = shape.start(range(1), False)
    for d in deltas:
        sse += shape.chunk([d], False, {}, stream_got.add([d])) or ""
    sse += shape.end(stream_got, False)
    events = [json.loads(block.split("data: ", 1)[1]) for block in sse.split("\n\n") if block]
    return whole, events, sse


def kinds(response: dict) -> list[str]:
    return [item["type"] for item in response["output"]]


def client_reads(sse: str) -> list[dict]:
    """The output items of the response the official client builds from the stream's events."""
    transport = httpx.MockTransport(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=sse.encode()))
    with openai.OpenAI(base_url="http://test/v1", api_key="none", max_retries=0,
                       http_client=httpx.Client(transport=transport)) as client:
        with client.responses.stream(model="m", input="hi") as stream:
            for _ in stream:
                pass
            return [item.model_dump(exclude_none=True) for item in stream.get_final_response().output]


TEXT = "Let me look." + CALL + "\nIt is sunny there."


@pytest.mark.parametrize("cuts", [[], [5, 20, 40, 80], list(range(1, len(TEXT))),
                                  *[sorted(random.Random(s).sample(range(1, len(TEXT)), 12)) for s in range(20)]])
def test_text_after_a_call_opens_a_new_message(cuts):
    whole, events, sse = answer(TEXT, cuts)
    assert kinds(whole) == ["message", "function_call", "message"]
    assert [m["content"][0]["text"] for m in whole["output"] if m["type"] == "message"] == \
        ["Let me look.", "\nIt is sunny there."]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and kinds(final) == kinds(whole)
    for a, b in zip(final["output"], whole["output"], strict=True):  # same items (ids aside)
        assert {**a, "id": None, "call_id": None} == {**b, "id": None, "call_id": None}
    # every delta goes to an item still open, and each item's deltas make its done text
    done = set()
    for e in events:
        if e["type"] == "response.output_item.done":
            done.add(e["output_index"])
        elif e["type"].endswith(".delta"):
            assert e["output_index"] not in done, e
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == kinds(whole)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert client_reads(sse) == [openai.types.responses.Response.model_validate(final).output[i]
                                 .model_dump(exclude_none=True) for i in range(3)]


@pytest.mark.parametrize("text, want", [
    (CALL + "\n" + CALL, ["function_call", "function_call"]),  # the newline between calls is no item
    ("  ", ["message"]),  # whitespace alone is still the answer's one message
    ("", ["message"]),
    (CALL + "\n\n", ["function_call"]),
])
def test_whitespace_between_items_is_no_item(text, want):
    for cuts in ([], list(range(1, len(text)))):
        whole, events, sse = answer(text, cuts)
        assert kinds(whole) == want and kinds(events[-1]["response"]) == want
        assert [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"] == want
        assert [item["type"] for item in client_reads(sse)] == want
