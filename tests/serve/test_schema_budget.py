"""A JSON schema whose every value needs more tokens than ``max_tokens`` is a 400 naming the
field, never an answer cut by ``length`` (``engine/schema_budget.py``): the bound is checked to
stay at or under the tokens of real values (canonical tokenization, the tiny and SmolLM2
vocabularies), and, through the official client against the tiny server, a budget under it is
refused (chat, completions, responses) while the bound itself is accepted and closes."""

from __future__ import annotations

import json
import random

import jsonschema
import openai
import pytest

from tenacia.serve.engine.schema_budget import SchemaBudget
from tenacia.serve.responses import TokenText

KEYS = ["id", "name", "email", "age", "city", "country", "zip", "phone", "score", "active", "tags", "note"]
WIDE = {"type": "object", "properties": {k: {"type": "integer", "minimum": 0, "maximum": 9} for k in KEYS},
        "required": KEYS, "additionalProperties": False}
NESTED = {"type": "object", "$defs": {"line": {"type": "object", "properties": {"sku": {"type": "integer"}, "qty": {"type": "integer"}},
                                               "required": ["sku", "qty"]}},
          "properties": {"order": {"type": "object", "properties": {"lines": {"type": "array", "minItems": 3,
                                                                             "items": {"$ref": "#/$defs/line"}}},
                                   "required": ["lines"]}, "when": {"type": "string"}},
          "required": ["when", "order"]}
SMALL = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
# schema, a valid value of it (the smallest the test can think of), written as the grammar writes JSON
VALUES = [(WIDE, {k: 0 for k in KEYS}), (NESTED, {"when": "", "order": {"lines": [{"sku": 0, "qty": 0}] * 3}}),
          (SMALL, {}), ({"type": "array", "items": {"enum": ["x"]}, "minItems": 4}, ["x"] * 4)]


def budget_of(tokenizer) -> SchemaBudget:
    tt = TokenText(tokenizer)
    return SchemaBudget(bytes(tt.bytes(i)) for i in range(tokenizer.get_vocab_size()))


def compact(value) -> str:
    return json.dumps(value, separators=(", ", ": "))


def smollm2_tokenizer():
    from tokenizers import Tokenizer

    from tenacia.data.smollm2 import smollm2_dir

    return Tokenizer.from_file(str(smollm2_dir() / "tokenizer.json"))


@pytest.mark.parametrize("which", ["tiny", pytest.param("smollm2", marks=pytest.mark.smollm2)])
def test_the_bound_never_exceeds_a_real_value_s_tokens(which, tokenizer):
    tok = tokenizer if which == "tiny" else smollm2_tokenizer()
    budget = budget_of(tok)
    for schema, value in VALUES:
        jsonschema.validate(value, schema)
        need, _ = budget.min_tokens(schema)
        assert need <= len(tok.encode(compact(value), add_special_tokens=False).ids), schema
    assert budget.min_tokens(WIDE)[0] >= len(KEYS), "each required key costs at least a token"
    # cover: never more than the canonical tokenization of the text, with any context around it
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice('ab"{}:, xyz01_') for _ in range(rng.randint(1, 12)))
        assert budget.cover(text.encode()) <= len(tok.encode(text, add_special_tokens=False).ids), text
        around = "q" + text + "w"
        assert budget.cover(text.encode()) <= len(tok.encode(around, add_special_tokens=False).ids), around


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}}


def test_a_budget_the_schema_cannot_close_in_is_a_400(client, tokenizer):
    need, _ = budget_of(tokenizer).min_tokens(WIDE)
    chat = [{"role": "user", "content": "JSON please."}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=chat, max_tokens=need - 1, response_format=schema_format(WIDE))
    assert err.value.body["param"] == "max_tokens" and f"at least {need} tokens" in err.value.body["message"]
    assert '"id": ' in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="{", max_tokens=need - 1, extra_body={"response_format": schema_format(WIDE)})
    assert err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="tiny", input="JSON please.", max_output_tokens=need - 1,
                                text={"format": {"type": "json_schema", "name": "t", "schema": WIDE, "strict": True}})
    assert err.value.body["param"] == "max_output_tokens"
    # enough for the keys: accepted; with room for the values too it closes and validates
    client.chat.completions.create(model="tiny", messages=chat, max_tokens=need, response_format=schema_format(WIDE))
    r = client.chat.completions.create(model="tiny", messages=chat, max_tokens=4 * need, temperature=0.0,
                                       response_format=schema_format(WIDE))
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), WIDE)
