"""Tool calling in the Hermes / Qwen format: the chat template shows the model its ``tools``, the
model answers ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` (one block a
call, any number of them), and the server turns those blocks into OpenAI ``tool_calls``.

Contract:
- ``check_tools`` refuses what cannot work (400 naming the field): tools for a model whose chat
  template never mentions them, a malformed tool, a ``tool_choice`` naming no tool.
- ``tool_choice``: "none" shows no tools and parses nothing; "auto" (the default with tools)
  parses what the model writes; "required" and a named function are enforced by a grammar
  (``tool_grammar``, llguidance's Lark with the function's parameters as a JSON schema), so even
  a model never trained on tools writes a valid call.
- ``ToolCallParser`` reads a choice's text as it arrives. Text outside blocks is content; a block
  is held until it closes, then becomes one call: a delta with its ``id``, ``type`` and
  ``name`` and empty ``arguments``, then a delta with the whole ``arguments`` string, so the
  streamed fragments concatenate to exactly the non-streamed call however the text was cut into
  tokens. A block whose JSON does not parse, or that never closes, stays content.
- ``parallel_tool_calls: false`` keeps the first call only.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from .engine.grammar import JSON_OPTIONS
from .engine.sequence import InvalidRequest
from .reasoning import partial_suffix

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def check_tools(tools: list[Any] | None, tool_choice: Any, template_source: str) -> tuple[list[dict], Any]:
    """Validated ``tools`` and ``tool_choice`` ("none", "auto", "required" or a function name);
    tools are [] when none are shown to the model."""
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice", "tool_choice needs tools")
        return [], "none"
    if "tools" not in template_source:
        raise InvalidRequest("tools", "this model's chat template has no tool support; send no tools")
    functions = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest(f"tools[{i}]", f"tools[{i}] must be {{'type': 'function', 'function': "
                                 "{'name': ..., 'parameters': {...}}}")
        if not isinstance(fn.get("parameters", {}), dict):
            raise InvalidRequest(f"tools[{i}].function.parameters", "parameters must be a JSON schema object")
        functions.append(tool)
    names = [t["function"]["name"] for t in functions]
    if tool_choice is None:
        tool_choice = "auto"
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        if name not in names:
            raise InvalidRequest("tool_choice", f"tool_choice names {name!r}, which is not among the tools {names}")
        tool_choice = name
    elif tool_choice not in ("none", "auto", "required"):
        raise InvalidRequest("tool_choice", "tool_choice must be 'none', 'auto', 'required' or "
                             f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r}")
    if tool_choice == "none":
        return [], "none"
    return functions, tool_choice


def tool_grammar(tools: list[dict], choice: str, parallel: bool) -> str | None:
    """The llguidance grammar forcing a call ("required": any tool, one or more when ``parallel``;
    a name: that function, once); None for "auto"."""
    from llguidance import LLMatcher

    if choice == "auto":
        return None
    chosen = [t for t in tools if choice == "required" or t["function"]["name"] == choice]
    calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
              "properties": {"name": {"const": t["function"]["name"]},
                             "arguments": t["function"].get("parameters") or {"type": "object"}}} for t in chosen]
    schema = {"anyOf": calls, "x-guidance": JSON_OPTIONS} if len(calls) > 1 else {**calls[0], "x-guidance": JSON_OPTIONS}
    call = f'"{OPEN}\\n" %json{json.dumps(schema)} "\\n{CLOSE}"'
    more = ' ("\\n" call)*' if parallel and choice == "required" else ""
    grammar = LLMatcher.grammar_from_lark(f"start: call{more}\ncall: {call}\n")
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise InvalidRequest("tools", f"the tools' parameters cannot be enforced: {messages[0]}")
    return grammar


@dataclass(slots=True)
class ToolCallParser:
    """One choice's text -> content and tool-call deltas (module docstring)."""

    parallel: bool = True
    buffer: str = ""
    calls: list[dict] = field(default_factory=list)

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        """Add ``text``; returns the content and the OpenAI ``tool_calls`` deltas it releases."""
        self.buffer += text
        content, deltas = "", []
        while self.buffer:
            start = self.buffer.find(OPEN)
            if start < 0:
                keep = 0 if final else partial_suffix(self.buffer, OPEN)
                content += self.buffer[:len(self.buffer) - keep]
                self.buffer = self.buffer[len(self.buffer) - keep:]
                break
            content += self.buffer[:start]
            self.buffer = self.buffer[start:]
            end = self.buffer.find(CLOSE)
            if end < 0:
                if final:
                    content, self.buffer = content + self.buffer, ""
                break
            block, self.buffer = self.buffer[:end + len(CLOSE)], self.buffer[end + len(CLOSE):]
            call = _parse(block[len(OPEN):-len(CLOSE)])
            if call is None:
                content += block
            elif self.parallel or not self.calls:
                deltas += self._deltas(*call)
        return content, deltas

    def _deltas(self, name: str, arguments: str) -> list[dict]:
        index = len(self.calls)
        call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": name, "arguments": arguments}}
        self.calls.append(call)
        return [{"index": index, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}},
                {"index": index, "function": {"arguments": arguments}}]


def _parse(body: str) -> tuple[str, str] | None:
    """A block's JSON -> (name, arguments as a JSON string), or None when it is no call."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    return data["name"], arguments if isinstance(arguments, str) else json.dumps(arguments)


