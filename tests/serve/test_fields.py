"""Nothing silently ignored: OpenAI fields that cannot change the output are accepted and have
no effect; those that would change it and are not implemented are a 400 naming the field."""

from __future__ import annotations

import openai
import pytest

from tenacia.serve.protocol import NO_OPS, UNSUPPORTED

CHAT = [{"role": "user", "content": "hi"}]
NO_OP_VALUES = {"user": "u-1", "metadata": {"k": "v"}, "service_tier": "auto", "prompt_cache_key": "k",
                "safety_identifier": "s", "prediction": {"type": "content", "content": "x"},
                "store": False}
REFUSED = {"functions": [{"name": "f"}], "function_call": "auto", "audio": {"voice": "alloy", "format": "wav"},
           "modalities": ["text", "audio"], "web_search_options": {}, "reasoning_effort": "high",
           "verbosity": "low", "store": True}


def test_no_op_fields_change_nothing(client):
    assert set(NO_OP_VALUES) == set(NO_OPS)
    base = {"model": "tiny", "messages": CHAT, "max_tokens": 6, "temperature": 0.0, "extra_body": {"ignore_eos": True}}
    plain = client.chat.completions.create(**base).choices[0].message.content
    with_all = client.chat.completions.create(**{**base, "extra_body": {**base["extra_body"], **NO_OP_VALUES}})
    assert with_all.choices[0].message.content == plain


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_fields_that_would_change_the_output_are_a_400_naming_them(client, field):
    assert set(REFUSED) == set(UNSUPPORTED)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2, extra_body={field: REFUSED[field]})
    assert err.value.body["param"] == field and err.value.body["code"] == "unsupported_parameter"
    assert field in err.value.body["message"]


def test_their_off_values_are_accepted(client):
    off = {"tools": [], "tool_choice": "none", "modalities": ["text"], "reasoning_effort": None}
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2, extra_body=off)
    assert r.choices[0].finish_reason in ("stop", "length")
    c = client.completions.create(model="tiny", prompt="x", max_tokens=2, user="u", extra_body={"store": False})
    assert c.choices[0].finish_reason in ("stop", "length")
