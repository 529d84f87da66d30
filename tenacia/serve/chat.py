"""Chat messages -> prompt text, through the model's own Jinja chat template.

Templates run in Jinja's sandbox, with the options and helpers transformers gives them
(``trim_blocks``, ``lstrip_blocks``, ``raise_exception``, and their ``tojson``: keys in the
order given, non-ASCII and ``<>&'`` written as they are, where Jinja's own sorts keys and escapes
for HTML), so a template renders here exactly as
``AutoTokenizer.apply_chat_template`` renders it.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .engine.sequence import InvalidRequest

ROLES = ("system", "developer", "user", "assistant", "tool")


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' ``tojson`` filter: a tool call's arguments render as the model wrote them."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatTemplate:
    def __init__(self, source: str, special_tokens: dict[str, str] | None = None):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = _tojson
        self.source = source
        self.template = env.from_string(source)
        self.special_tokens = dict(special_tokens or {})

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
               tools: list[dict[str, Any]] | None = None) -> str:
        """messages: OpenAI chat messages (role, content as a string or a list of text parts; an
        assistant's ``tool_calls``, a tool result's ``tool_call_id``); ``tools``: OpenAI tools,
        shown to the template as ``tools`` when there are any."""
        plain = [_plain(m, i) for i, m in enumerate(messages)]
        extra = {"tools": tools} if tools else {}
        try:
            return self.template.render(messages=plain, add_generation_prompt=add_generation_prompt,
                                        **self.special_tokens, **extra)
        except TemplateError as e:
            raise InvalidRequest("messages", f"the model's chat template rejected the messages: {e}") from None


def _plain(message: dict[str, Any], i: int) -> dict[str, Any]:
    """A message as templates read it: role and text content, plus an assistant's ``tool_calls``
    (arguments as an object, as Hugging Face templates expect, when the JSON string parses) and a
    tool result's ``tool_call_id`` and ``name``."""
    plain = {"role": _role(message, i), "content": _content(message, i)}
    calls = message.get("tool_calls")
    if calls:
        if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function"), dict)
                                                  for c in calls):
            raise InvalidRequest(f"messages[{i}].tool_calls", f"messages[{i}].tool_calls must be a list of "
                                 "{'id': ..., 'type': 'function', 'function': {'name': ..., 'arguments': '...'}}")
        plain["tool_calls"] = [{**c, "function": {**c["function"], "arguments": _arguments(c["function"].get("arguments"))}}
                               for c in calls]
    for key in ("tool_call_id", "name"):
        if isinstance(message.get(key), str):
            plain[key] = message[key]
    return plain


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _role(message: dict[str, Any], i: int) -> str:
    role = message.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"messages[{i}].role", f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
    return "system" if role == "developer" else role


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(f"messages[{i}].content[{j}]",
                                     f"messages[{i}].content[{j}] must be a text part "
                                     "{'type': 'text', 'text': '...'}; this model reads text only")
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequest(f"messages[{i}].content",
                         f"messages[{i}].content must be a string or a list of text parts")
