"""The pythonic format (Llama 3.2 and Llama 4 with their pythonic templates): the answer is a
Python list of calls with keyword arguments, ``[get_weather(city="Paris", days=3), get_time()]``,
possibly between ``<|python_start|>`` and ``<|python_end|>``.

The answer is calls only if it starts (after whitespace and the tag) with ``[`` and a call's
``name(``; anything else is content from its first character. Each call is released whole
when its parentheses close (its arguments, Python literals, become a JSON object; ``true``,
``false`` and ``null`` are read as JSON's): pythonic arguments do not stream piece by piece.
Once an item is no call (positional arguments, an expression, a syntax error), the rest of the
answer from that item is content; after the list's ``]`` the end tag and whitespace are dropped
and the rest is content. Forced calls (``tool_choice`` required or named) have no grammar here."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from ..engine.sequence import InvalidRequest
from .calls import FAIL, WAIT, ToolCallParser, expect, skip_ws

START, END = "<|python_start|>", "<|python_end|>"
_FIRST = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_FIRST_PARTIAL = re.compile(r"(?:\[\s*(?:[A-Za-z_][\w.]*\s*)?)?")
_NEXT = re.compile(r"[A-Za-z_][\w.]*\s*\(")
_JSON_NAMES = {"true": True, "false": False, "null": None}


@dataclass(slots=True)
class PythonicParser(ToolCallParser):
    state: str = "start"  # "start": undecided; "list": between calls; "content": the rest is content

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        self.buffer += text
        deltas: list[dict] = []
        while self.state != "content" and self.buffer:
            step = self._start(final) if self.state == "start" else self._next(final)
            if step == WAIT:
                break
            if step == FAIL:
                self.state = "content"
            else:
                end, call = step
                self.buffer, self.state = self.buffer[end:], "list" if call is not None else "content"
                if call is not None:
                    deltas += self.emit(*call)
        content = ""
        if self.state == "content":
            content, self.buffer = self.buffer, ""
        return content, deltas

    def _start(self, final: bool):
        text = self.buffer
        pos = skip_ws(text, 0)
        if text.startswith(START, pos):
            pos = skip_ws(text, pos + len(START))
        elif not final and START.startswith(text[pos:]):
            return WAIT
        if _FIRST.match(text, pos):
            return self._call(skip_ws(text, pos + 1), final)
        return WAIT if not final and _FIRST_PARTIAL.fullmatch(text, pos) else FAIL

    def _next(self, final: bool):
        """After a call: ", " and the next call, or "]" ending the list (then the end tag)."""
        text = self.buffer
        pos = skip_ws(text, 0)
        if pos < len(text) and text[pos] == "]":
            pos = skip_ws(text, pos + 1)
            tagged = expect(text, pos, END, final)
            if tagged == WAIT:
                return WAIT
            return skip_ws(text, pos if tagged == FAIL else tagged), None
        pos = expect(text, pos, ",", final)
        if pos in (WAIT, FAIL):
            return pos
        pos = skip_ws(text, pos)
        if _NEXT.match(text, pos):
            return self._call(pos, final)
        return WAIT if not final and re.fullmatch(r"[A-Za-z_][\w.]*\s*|", text[pos:]) else FAIL

    def _call(self, pos: int, final: bool):
        """The call ``name(...)`` at ``pos``: (its end, (name, arguments)), WAIT or FAIL."""
        end = _close(self.buffer, self.buffer.index("(", pos))
        if end is None:
            return FAIL if final else WAIT
        call = _parse(self.buffer[pos:end])
        return FAIL if call is None else (end, call)


def _close(text: str, pos: int) -> int | None:
    """The index after the bracket that closes the one at ``pos`` (Python strings skipped)."""
    depth, quote, escaped = 0, "", False
    for i in range(pos, len(text)):
        c = text[i]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _parse(text: str) -> tuple[str, str] | None:
    """``name(k=v, ...)`` -> (name, arguments as JSON), or None when it is no such call."""
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None
    if not isinstance(node, ast.Call) or node.args or any(k.arg is None for k in node.keywords):
        return None
    name = ast.unparse(node.func)
    if not re.fullmatch(r"[A-Za-z_][\w.]*", name):
        return None
    try:
        arguments = {k.arg: _literal(k.value) for k in node.keywords}
        return name, json.dumps(arguments, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None


def _literal(node: ast.expr):
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    return ast.literal_eval(node)


def grammar(tools: list[dict], parallel: bool) -> str:
    raise InvalidRequest("tool_choice", "calls in the pythonic format cannot be forced here: send tool_choice "
                         "'auto' (or serve the model with another --tool-parser)")
