"""Streamed tool calls from a real model: SmolLM2-135M-Instruct served with a Hermes tool template
(its own template has no tools), through the official ``openai`` client. The arguments arrive
as fragments while they are generated, and the fragments join to exactly the arguments of the
same request answered whole, with ``tool_choice`` required and named (the grammar forcing a
call whose arguments the model writes). SmolLM2-135M never chose to call a tool under ``auto`` in
our tries (it writes Python code about the tool instead), so ``auto`` is tested on hand-written
outputs (``test_tool_parsers.py``). Slow: a second SmolLM2 server (half a minute on 2 cores)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from .test_tools import HERMES, WEATHER, merged
from .tiny import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]
ASK = [{"role": "user", "content": "What is the weather in Paris for the next 3 days? Call the tool."}]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from openai import OpenAI

    from tenacia.data.smollm2 import smollm2_dir

    src, out = smollm2_dir(), tmp_path_factory.mktemp("smollm2-tools")
    for f in src.iterdir():
        if f.name != "tokenizer_config.json":
            (out / f.name).symlink_to(f)
    config = json.loads((src / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": HERMES}))
    with ServerProcess(out, "--name", "smollm2-tools", "--tool-parser", "hermes", start_timeout=400) as server:
        with OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300) as c:
            yield c


@pytest.mark.timeout(600)
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_streamed_arguments_arrive_in_fragments_that_join_to_the_whole(client, choice):
    body = {"model": "smollm2-tools", "messages": ASK, "tools": [WEATHER], "tool_choice": choice,
            "max_tokens": 96, "temperature": 0.0}
    whole = client.chat.completions.create(**body).choices[0]
    calls = whole.message.tool_calls or []
    assert calls and whole.finish_reason == "tool_calls", whole
    chunks = [c for c in client.chat.completions.create(stream=True, **body) if c.choices]
    deltas = [t.model_dump(exclude_none=True) for c in chunks for t in c.choices[0].delta.tool_calls or []]
    assert merged(deltas) == [(c.function.name, c.function.arguments) for c in calls]
    fragments = [d for d in deltas if "id" not in d and d["function"]["arguments"]]
    assert len(fragments) >= 3, fragments  # one per generated piece, not one at the end
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
