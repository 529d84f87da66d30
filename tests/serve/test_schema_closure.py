"""Schemas that cannot close are refused before generating, naming the place (a JSON Pointer) and
the reason; schemas that can close, recursive ones with a base case among them, are not. The
check as a pure function over hand-written schemas, and through the tiny server: a 400 whose
``param`` names the field and whose message names the place."""

from __future__ import annotations

import json

import openai
import pytest

from tenacia.serve.engine.schema_closure import why_unclosable

NODE = {"type": "object", "properties": {"value": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}}}
# schema, the place that cannot close, words of the reason
UNCLOSABLE = [
    ({"$defs": {"node": {**NODE, "required": ["value", "next"]}}, "$ref": "#/$defs/node"},
     "#/$defs/node/properties/next", "no base case"),
    ({"type": "object", "properties": {"child": {"$ref": "#"}}, "required": ["child"]}, "#/properties/child", "no base case"),
    ({"$defs": {"tree": {"type": "object", "required": ["kids"], "properties": {
        "kids": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/tree"}}}}}, "$ref": "#/$defs/tree"},
     "#/$defs/tree/properties/kids/items", "no base case"),
    ({"$defs": {"a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}, "required": ["b"]},
                "b": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"},
     "#/$defs/b/items", "every value of #/$defs/a must hold another"),
    ({"type": "object", "properties": {"tags": {"type": "array", "minItems": 4, "maxItems": 2}}, "required": ["tags"]},
     "#/properties/tags", "minItems (4) is greater than maxItems (2)"),
    ({"type": "object", "properties": {"age": {"type": "integer", "minimum": 10, "maximum": 3}}, "required": ["age"]},
     "#/properties/age", "lower bound (10) is not below its upper bound (3)"),
    ({"type": "integer", "exclusiveMinimum": 1, "maximum": 1.5}, "#", "no integer lies between"),
    ({"type": "string", "minLength": 5, "maxLength": 1}, "#", "minLength (5) is greater than maxLength (1)"),
    ({"type": "object", "minProperties": 3, "maxProperties": 1}, "#", "minProperties (3)"),
    ({"type": "object", "required": ["a", "b"], "maxProperties": 1}, "#", "requires 2 properties but maxProperties is 1"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"], "additionalProperties": False},
     "#", "required property 'b' is not among its properties"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "#", "have no value in common"),
    ({"type": "string", "enum": [1, 2]}, "#", "no value of its enum is of its type (string)"),
    ({"type": "object", "properties": {"kind": {"enum": []}}, "required": ["kind"]}, "#/properties/kind", "enum is empty"),
    ({"anyOf": [{"type": "string", "minLength": 3, "maxLength": 1}, {"type": "array", "minItems": 2, "maxItems": 0}]},
     "#", "none of the 2 branches of anyOf"),
    ({"type": "array", "prefixItems": [{"type": "string"}, False], "minItems": 2}, "#/prefixItems/1", "false"),
]
CLOSABLE = [
    {"$defs": {"node": NODE}, "$ref": "#/$defs/node"},  # next is optional: the base case
    {"$defs": {"node": {**NODE, "required": ["value", "next"], "properties": {
        **NODE["properties"], "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}}}}, "$ref": "#/$defs/node"},
    {"$defs": {"tree": {"type": "object", "required": ["kids"], "properties": {
        "kids": {"type": "array", "items": {"$ref": "#/$defs/tree"}}}}}, "$ref": "#/$defs/tree"},  # kids may be []
    {"$defs": {"expr": {"anyOf": [{"type": "integer"}, {"type": "object", "required": ["op", "args"], "properties": {
        "op": {"enum": ["+", "*"]}, "args": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/expr"}}}}]}},
     "$ref": "#/$defs/expr"},
    {"type": "integer", "minimum": 3, "maximum": 3},
    {"type": "number", "exclusiveMinimum": 1, "exclusiveMaximum": 1.5},
    {"minItems": 5, "maxItems": 2},  # no type: a value of another type passes
    {"type": ["string", "null"], "minLength": 4, "maxLength": 1},  # null closes it
    {"type": "object", "required": ["x"], "patternProperties": {"^x$": {"type": "string"}}, "additionalProperties": False},
    {"$ref": "https://example.com/other.json"},  # not resolved here: not refused here
]


@pytest.mark.parametrize("schema, where, words", UNCLOSABLE)
def test_a_schema_that_cannot_close_names_the_place_and_why(schema, where, words):
    failure = why_unclosable(schema)
    assert failure is not None and failure[0] == where and words in failure[1], failure


@pytest.mark.parametrize("schema", CLOSABLE)
def test_a_schema_that_can_close_passes(schema):
    assert why_unclosable(schema) is None


def test_a_deep_chain_of_refs_is_decided_once_each():
    """A ref to two refs to two refs ... (2^40 paths) is decided in linear time."""
    defs = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"type": "array", "minItems": 1, "items": {"$ref": f"#/$defs/d{i + 1}"}}]}
            for i in range(40)}
    defs["d40"] = {"type": "object", "required": ["loop"], "properties": {"loop": {"$ref": "#/$defs/d0"}}}
    failure = why_unclosable({"$defs": defs, "$ref": "#/$defs/d0"})
    assert failure is not None and "no base case" in failure[1]
    defs["d40"] = {"type": "integer"}
    assert why_unclosable({"$defs": defs, "$ref": "#/$defs/d0"}) is None


def fmt(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}


@pytest.mark.parametrize("schema, where, words", [UNCLOSABLE[0], UNCLOSABLE[4], UNCLOSABLE[10]])
def test_the_server_refuses_it_before_generating(client, schema, where, words):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=10,
                                       response_format=fmt(schema))
    body = err.value.body
    assert body["param"] == "response_format.json_schema.schema" and "cannot close" in body["message"]
    assert f"at {where}," in body["message"] and words in body["message"], body


def test_a_recursive_schema_with_a_base_case_is_served(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=40,
                                       temperature=0.0, response_format=fmt(CLOSABLE[0]))
    choice = r.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    assert choice.message.content.startswith("{")

