"""Structured outputs (``response_format`` json_schema, json_object) through the official
``openai`` client against the tiny server: every output parses and validates, whatever the
sampling parameters and whatever else runs in the batch; streamed equals whole; what the grammar
cannot enforce is a 400 that names it. The tiny random model would write a free string forever,
so these schemas bound their strings; ``test_structured_smollm2.py`` runs the 50-schema suite on
a real model."""

from __future__ import annotations

import json
import threading

import jsonschema
import openai
import pytest

CHAT = [{"role": "user", "content": "Describe an order as JSON."}]
BOUNDED = [
    {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                                      "status": {"enum": ["open", "paid", "sent"]}},
     "required": ["id", "status"], "additionalProperties": False},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
     "required": ["ok", "code"], "additionalProperties": False},
    {"type": "object", "properties": {"lines": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
        "type": "object", "properties": {"sku": {"type": "string", "maxLength": 4}, "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["sku", "qty"], "additionalProperties": False}}},
     "required": ["lines"], "additionalProperties": False},
    {"type": "array", "items": {"enum": [1, 2, 3, "x", None]}, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {"note": {"type": ["string", "null"], "maxLength": 6},
                                      "when": {"type": "string", "pattern": "^20[0-9]{2}-[01][0-9]$"}},
     "required": ["when"], "additionalProperties": False},
]
SAMPLING = [
    {"temperature": 0.0},
    {"temperature": 1.0, "top_p": 0.9, "seed": 1},
    {"temperature": 0.8, "presence_penalty": 1.5, "frequency_penalty": 1.0, "seed": 2},
    {"temperature": 1.2, "extra_body": {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.3}, "seed": 3},
    {"temperature": 1.0, "n": 2, "seed": 4},
]


def fmt(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "order", "schema": schema, "strict": True}}


def check(text: str, schema: dict, finish_reason: str) -> None:
    assert finish_reason == "stop", (finish_reason, text)
    jsonschema.validate(json.loads(text), schema)


def test_every_output_validates_under_every_sampling_setting_in_one_batch(client):
    """All schemas x all settings at once, so constrained and free sequences share batches."""
    results, errors = [], []

    def one(schema: dict, kwargs: dict) -> None:
        try:
            extra = {**kwargs.pop("extra_body", {})}
            r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=120,
                                               response_format=fmt(schema), extra_body=extra, **kwargs)
            results.extend((schema, c.message.content, c.finish_reason) for c in r.choices)
        except Exception as e:  # noqa: BLE001 - reported below with the case
            errors.append((schema, kwargs, e))

    free = threading.Thread(target=lambda: client.completions.create(
        model="tiny", prompt="free text", max_tokens=200, extra_body={"ignore_eos": True}))
    free.start()
    threads = [threading.Thread(target=one, args=(s, dict(k))) for s in BOUNDED for k in SAMPLING]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    free.join(120)
    assert not errors, errors[:3]
    assert len(results) == len(BOUNDED) * (len(SAMPLING) + 1)
    for schema, text, reason in results:
        check(text, schema, reason)


def test_completions_take_a_response_format_too(client):
    r = client.completions.create(model="tiny", prompt="order:", max_tokens=80, temperature=0.0,
                                  extra_body={"response_format": fmt(BOUNDED[0])})
    check(r.choices[0].text, BOUNDED[0], r.choices[0].finish_reason)


def test_streamed_structured_output_equals_the_whole_one(client):
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 120, "temperature": 0.0, "response_format": fmt(BOUNDED[2])}
    whole = client.chat.completions.create(**body).choices[0]
    chunks = list(client.chat.completions.create(stream=True, **body))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.message.content
    check(whole.message.content, BOUNDED[2], whole.finish_reason)


@pytest.mark.parametrize("response_format, param, words", [
    (fmt({"not": {"type": "string"}}), "response_format.json_schema.schema", "not"),
    (fmt({"type": "array", "uniqueItems": True}), "response_format.json_schema.schema", "uniqueItems"),
    (fmt({"if": {"type": "string"}, "then": {"maxLength": 3}}), "response_format.json_schema.schema", "if"),
    (fmt({"type": "string", "pattern": "(?=a)b"}), "response_format.json_schema.schema", "look-around"),
    (fmt({"type": "string", "format": "colour"}), "response_format.json_schema.schema", "colour"),
    ({"type": "xml"}, "response_format.type", "json_schema"),
    ({"type": "json_schema"}, "response_format.json_schema", "schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}, "response_format.json_schema", "schema"),
])
def test_what_the_grammar_cannot_enforce_is_a_400_naming_it(client, response_format, param, words):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=10, response_format=response_format)
    assert err.value.body["param"] == param and words in err.value.body["message"], err.value.body


def test_min_tokens_and_a_response_format_are_refused_together(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=10, response_format=fmt(BOUNDED[0]),
                                       extra_body={"min_tokens": 3})
    assert err.value.body["param"] == "min_tokens"


def test_text_format_is_free_text(client):
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=5, response_format={"type": "text"},
                                       extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 5
