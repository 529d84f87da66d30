"""What every tool-call format shares: a parser's output (OpenAI ``tool_calls`` deltas), the
call objects models write, and a scanner for calls written as a run of JSON objects.

Contract of every ``ToolCallParser`` (``feed(text, final)`` -> (content, deltas)):
- It reads one choice's text as it arrives, in pieces cut anywhere. Text that is no call is
  content; text that may still become a call is held until it is decided (a partial tag, a JSON
  object not closed yet), at the latest until ``final``.
- A call is released only once its JSON is complete and valid, as two deltas: ``index``, ``id``,
  ``type`` and ``name`` with empty ``arguments``, then the whole ``arguments`` string. The answer
  is therefore the same however the text was cut: streamed fragments concatenate to exactly the
  non-streamed ``calls``, and what is content streamed is content whole. Text that fails to
  parse as a call (malformed JSON, an object without a name, a call never closed) is content,
  markup included.
- ``parallel=False`` keeps the first call and drops the others.
"""

from __future__ import annotations

import json
import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..engine.grammar import JSON_OPTIONS

WAIT, FAIL = "wait", "fail"  # a scan's verdicts: more text may decide it; it is no call
_DECODER = json.JSONDecoder()
_ALNUM = string.ascii_letters + string.digits


@dataclass(slots=True)
class ToolCallParser:
    """One choice's text -> content and tool-call deltas (module docstring). Subclasses write
    ``feed``; ``emit`` turns a parsed call into its deltas."""

    parallel: bool = True
    buffer: str = ""
    calls: list[dict] = field(default_factory=list)

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        raise NotImplementedError

    def new_id(self) -> str:
        return f"call_{uuid.uuid4().hex[:24]}"

    def emit(self, name: str, arguments: str) -> list[dict]:
        """The deltas of a new call (none when ``parallel`` is off and a call was made)."""
        if self.calls and not self.parallel:
            return []
        index = len(self.calls)
        call = {"id": self.new_id(), "type": "function", "function": {"name": name, "arguments": arguments}}
        self.calls.append(call)
        return [{"index": index, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}},
                {"index": index, "function": {"arguments": arguments}}]


def mistral_id() -> str:
    """Mistral's tool-call id: 9 letters and digits (its chat templates refuse any other)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(9))


def as_call(data: Any, keys: tuple[str, ...] = ("arguments", "parameters")) -> tuple[str, str] | None:
    """A decoded call object -> (name, arguments as a JSON string), or None when it is no call:
    a dict with a non-empty string ``name`` and, under the first of ``keys`` present, an object
    (re-encoded by ``json.dumps``, non-ASCII kept) or a JSON string (kept as written)."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None
    arguments = next((data[k] for k in keys if k in data), {})
    if isinstance(arguments, str):
        return data["name"], arguments
    if not isinstance(arguments, dict):
        return None
    return data["name"], json.dumps(arguments, ensure_ascii=False)


def skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def expect(text: str, pos: int, literal: str, final: bool) -> int | str:
    """The position after ``literal`` at ``pos``; WAIT when the text ends inside it (not final),
    else FAIL when it is not there."""
    rest = text[pos:pos + len(literal)]
    if rest == literal:
        return pos + len(literal)
    return WAIT if not final and literal.startswith(rest) else FAIL


def decode_object(text: str, pos: int, final: bool) -> tuple[Any, int] | str:
    """The JSON object starting at ``pos`` and the position after it; WAIT while it may still
    close (not final), FAIL when it cannot."""
    if pos == len(text):
        return FAIL if final else WAIT
    if text[pos] != "{":
        return FAIL
    try:
        return _DECODER.raw_decode(text, pos)
    except ValueError:
        return FAIL if final else WAIT


def call_schema(tool: dict, arguments_key: str) -> dict:
    """The JSON schema of one call of ``tool``: its name, and its parameters under ``arguments_key``."""
    fn = tool["function"]
    return {"type": "object", "additionalProperties": False, "required": ["name", arguments_key],
            "properties": {"name": {"const": fn["name"]},
                           arguments_key: fn.get("parameters") or {"type": "object"}}}


def calls_json(tools: list[dict], arguments_key: str) -> str:
    """An llguidance Lark ``%json`` rule body for one call of any of ``tools``."""
    calls = [call_schema(t, arguments_key) for t in tools]
    schema = {"anyOf": calls} if len(calls) > 1 else calls[0]
    return f"%json{json.dumps({**schema, 'x-guidance': JSON_OPTIONS})}"
