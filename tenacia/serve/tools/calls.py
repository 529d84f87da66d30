"""What every tool-call format shares: a parser's output (OpenAI ``tool_calls`` deltas), the
call objects models write, and the reading of a call whose arguments stream as they arrive.

Contract of every ``ToolCallParser`` (``feed(text, final)`` -> (content, deltas)):
- It reads one choice's text as it arrives, in pieces cut anywhere. Text that is no call is
  content; text that may still become a call is held until it is decided (a partial tag, a call
  object whose head has not arrived yet), at the latest until ``final``.
- A call opens with one delta (``index``, ``id``, ``type``, ``name``, empty ``arguments``); its
  arguments follow as fragments. A call object whose head reads ``{"name": "...", "arguments":
  {`` (or ``"parameters"``) opens as soon as that head has arrived, and its arguments then
  stream as the model writes them (``open_call``, ``stream_call``): the text of the arguments
  object as written, up to its closing brace; the rest of the call object is markup. Any other
  call object (keys in another order, arguments as a JSON string) is read whole, then released
  as the opening delta and one fragment. Each format says what it does with text that fails to
  be a call (it is content, markup included, unless a call had opened already).
- The answer is the same however the text was cut: each piece is read as far as it decides,
  streamed fragments concatenate to exactly the non-streamed ``calls`` (which are built from the
  same fragments), and what is content streamed is content whole. A call cut off by the end of
  the answer keeps the arguments written so far (OpenAI's own calls may be invalid JSON).
- ``parallel=False`` keeps the first call and drops the others.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..engine.grammar import JSON_OPTIONS
from ..reasoning import partial_suffix

WAIT, FAIL = "wait", "fail"  # a scan's verdicts: more text may decide it; it is no call
_DECODER = json.JSONDecoder()
_ALNUM = string.ascii_letters + string.digits
# the head of a call object whose arguments can stream: name first, then an arguments object
HEAD = re.compile(r'\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)+")\s*,\s*"(?:arguments|parameters)"\s*:\s*(?=\{)')


@dataclass(slots=True)
class Nesting:
    """Where a JSON value written as text ends: braces and brackets counted outside strings."""

    depth: int = 0
    in_string: bool = False
    escaped: bool = False

    def scan(self, text: str, start: int, stop: int) -> int | None:
        """Read ``text[start:stop]``; the index after the character that closes the value, or
        None when the value is still open at ``stop``."""
        for i in range(start, stop):
            c = text[i]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif c == "\\":
                    self.escaped = True
                elif c == '"':
                    self.in_string = False
            elif c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return None


@dataclass(slots=True)
class OpenCall:
    """A call whose arguments are streaming: its index (None: dropped, ``parallel`` is off), and
    the nesting of its arguments ("arguments"), then of the rest of its call object ("rest")."""

    index: int | None
    nesting: Nesting = field(default_factory=Nesting)
    phase: str = "arguments"


@dataclass(slots=True)
class ToolCallParser:
    """One choice's text -> content and tool-call deltas (module docstring). Subclasses write
    ``feed``; ``emit`` releases a call read whole, ``begin`` and ``fragment`` one whose arguments
    stream (``start_call`` and ``stream_call`` read call objects with them)."""

    parallel: bool = True
    buffer: str = ""
    calls: list[dict] = field(default_factory=list)
    streaming: OpenCall | None = None  # the call whose arguments are arriving

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        raise NotImplementedError

    def text_until(self, tag: str, final: bool) -> tuple[str, int]:
        """The buffer's content before ``tag`` and the tag's place in what is left (-1: not there;
        a tail that may be the start of ``tag`` stays in the buffer unless ``final``)."""
        start = self.buffer.find(tag)
        if start < 0:
            keep = 0 if final else partial_suffix(self.buffer, tag)
            start = len(self.buffer) - keep
            content, self.buffer = self.buffer[:start], self.buffer[start:]
            return content, -1
        content, self.buffer = self.buffer[:start], self.buffer[start:]
        return content, 0

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

    def begin(self, name: str, call_id: str | None = None) -> list[dict]:
        """Open a call whose arguments will stream: its opening delta (none when dropped)."""
        if self.calls and not self.parallel:
            self.streaming = OpenCall(None)
            return []
        self.streaming = OpenCall(len(self.calls))
        call = {"id": call_id or self.new_id(), "type": "function", "function": {"name": name, "arguments": ""}}
        self.calls.append(call)
        return [{"index": self.streaming.index, "id": call["id"], "type": "function",
                 "function": {"name": name, "arguments": ""}}]

    def fragment(self, text: str) -> list[dict]:
        """Add ``text`` to the open call's arguments: its delta (none when empty or dropped)."""
        if not text or self.streaming is None or self.streaming.index is None:
            return []
        self.calls[self.streaming.index]["function"]["arguments"] += text
        return [{"index": self.streaming.index, "function": {"arguments": text}}]

    def start_call(self, pos: int, final: bool, keys: tuple[str, ...]) -> tuple[int, list[dict]] | str:
        """A call object at ``pos`` of the buffer: (where reading goes on, its deltas), WAIT or
        FAIL. Its head opens a streaming call (reading goes on at its arguments: call
        ``stream_call``); else it is read whole once it closes (reading goes on after it)."""
        head = HEAD.match(self.buffer, pos)
        if head:
            try:
                name = json.loads(head.group(1))
            except ValueError:
                return FAIL
            return head.end(), self.begin(name)
        found = decode_object(self.buffer, pos, final)
        if found in (WAIT, FAIL):
            return found
        call = as_call(found[0], keys)
        return FAIL if call is None else (found[1], self.emit(*call))

    def stream_call(self, final: bool, fence: str | None = None, value: bool = False) -> tuple[list[dict], bool]:
        """Read the buffer into the open call: (its argument fragments, whether it is over). It
        is over when its call object closes (the buffer then starts after it), at ``fence``
        (a tag that ends a call wherever it is; a partial one is held back), or at ``final``.
        ``value``: the arguments are a bare JSON value, with no call object around them."""
        call, text = self.streaming, self.buffer
        stop, fenced = len(text), False
        if fence is not None:
            at = text.find(fence)
            if at >= 0:
                stop, fenced = at, True
            elif not final:
                stop -= partial_suffix(text, fence)
        deltas, pos, closed = [], 0, False
        if call.phase == "arguments":
            end = call.nesting.scan(text, 0, stop)
            pos = stop if end is None else end
            deltas = self.fragment(text[:pos])
            if end is not None:
                call.phase, call.nesting = "rest", Nesting(depth=1)
                closed = value
        if call.phase == "rest" and not closed:
            end = call.nesting.scan(text, pos, stop)
            pos, closed = (stop, False) if end is None else (end, True)
        self.buffer = text[pos:]
        over = closed or fenced or final
        if over:
            self.streaming = None
        return deltas, over


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
