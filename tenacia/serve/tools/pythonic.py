"""The pythonic format (Llama 3.2 and Llama 4 with their pythonic templates): the answer is a
Python list of calls with keyword arguments, ``[get_weather(city="Paris", days=3), get_time()]``,
possibly between ``<|python_start|>`` and ``<|python_end|>``.

The answer is calls only if it starts (after whitespace and the tag) with ``[``, a call's
``name(`` and then a keyword (``city=``) or ``)``; anything else (positional arguments, an
expression) is content from its first character. A call opens there, and its arguments stream
as JSON while they are written (``ArgumentsReader``): ``{`` at the opening, then ``"key": `` as
each keyword arrives, a string value character by character as it is written (its escapes
decoded), any other value (a number, a list, a dict; Python literals, with ``true``, ``false``
and ``null`` read as JSON's) whole when it ends, and ``}`` at the call's ``)``. The fragments
join to ``json.dumps`` of the arguments, however the text is cut. A call whose arguments turn
out to be no Python literals (an expression, a repeated keyword, text after a string) stands
with the arguments streamed so far, like a call cut by the end of the answer, and the rest of
the answer from there is content. Between calls, an item that is no call makes the rest of the
answer from its comma content; after the list's ``]`` the end tag and whitespace are dropped
and the rest is content. Forced calls (``tool_choice`` required or named) have no grammar here."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

from ..engine.sequence import InvalidRequest
from .calls import FAIL, WAIT, ToolCallParser, expect, skip_ws

START, END = "<|python_start|>", "<|python_end|>"
_NAME, _KEY = r"[A-Za-z_][\w.]*", r"[A-Za-z_]\w*"
# a call's opening, up to its "(" and the whitespace after it, when a keyword or ")" follows
_FIRST = re.compile(rf"\[\s*({_NAME})\s*\(\s*(?=\)|{_KEY}\s*=[^=])")
_NEXT = re.compile(rf"\s*,\s*({_NAME})\s*\(\s*(?=\)|{_KEY}\s*=[^=])")
_FIRST_PARTIAL = re.compile(rf"(?:\[\s*(?:{_NAME}\s*(?:\(\s*(?:{_KEY}\s*=?)?)?)?)?")
_NEXT_PARTIAL = re.compile(rf"\s*(?:,\s*(?:{_NAME}\s*(?:\(\s*(?:{_KEY}\s*=?)?)?)?)?")
_KEYWORD = re.compile(rf"({_KEY})\s*=(?!=)\s*")
_KEYWORD_PARTIAL = re.compile(rf"{_KEY}\s*=?")
_JSON_NAMES = {"true": True, "false": False, "null": None}
_ESCAPE_LENGTH = {"x": 4, "u": 6, "U": 10}  # the escape's characters, backslash included
MALFORMED = "malformed"


@dataclass(slots=True)
class PythonicParser(ToolCallParser):
    state: str = "start"  # "start": undecided; "list": between calls; "call": in one; "content": the rest is content
    reader: ArgumentsReader | None = None

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        self.buffer += text
        deltas: list[dict] = []
        while self.state != "content" and self.buffer:
            if self.state == "call":
                status, fragments = self.reader.read(self, final)
                deltas += fragments
                if status == WAIT:
                    break
                if status == MALFORMED:  # the call stands as streamed; the rest is content
                    self.state, self.streaming = "content", None
                else:  # its ")" arrived
                    self.buffer, self.state, self.streaming = self.buffer[status:], "list", None
                continue
            step = self._open(final) if self.state == "start" else self._next(final)
            if step == WAIT:
                break
            if step == FAIL:
                self.state = "content"
            elif step[1] is None:  # the list ended
                self.buffer, self.state = self.buffer[step[0]:], "content"
            else:
                end, name = step
                self.buffer, self.state, self.reader = self.buffer[end:], "call", ArgumentsReader()
                deltas += self.begin(name) + self.fragment("{")
        if final and self.state == "call":  # cut by the end of the answer: the call keeps what streamed
            self.buffer, self.state, self.streaming = "", "content", None
        content = ""
        if self.state == "content":
            content, self.buffer = self.buffer, ""
        return content, deltas

    def _open(self, final: bool):
        """The answer's start: (after the first call's "(", its name), WAIT or FAIL."""
        text = self.buffer
        pos = skip_ws(text, 0)
        if text.startswith(START, pos):
            pos = skip_ws(text, pos + len(START))
        elif not final and START.startswith(text[pos:]):
            return WAIT
        if m := _FIRST.match(text, pos):
            return m.end(), m.group(1)
        return WAIT if not final and _FIRST_PARTIAL.fullmatch(text, pos) else FAIL

    def _next(self, final: bool):
        """After a call: ", " and the next call's opening, or "]" ending the list (then the end
        tag): (where reading goes on, the next call's name or None at the end), WAIT or FAIL."""
        text = self.buffer
        pos = skip_ws(text, 0)
        if pos < len(text) and text[pos] == "]":
            pos = skip_ws(text, pos + 1)
            tagged = expect(text, pos, END, final)
            if tagged == WAIT:
                return WAIT
            return skip_ws(text, pos if tagged == FAIL else tagged), None
        if m := _NEXT.match(text):
            return m.end(), m.group(1)
        return WAIT if not final and _NEXT_PARTIAL.fullmatch(text) else FAIL


@dataclass(slots=True)
class ArgumentsReader:
    """A call's keyword arguments, read from the parser's buffer as they arrive and written as
    JSON fragments (module docstring). ``read`` returns (status, deltas): status is the index
    after the call's ")" when it ends, WAIT when more text is needed (the buffer then starts at
    what is not read yet), or MALFORMED (the buffer then starts where the call went wrong)."""

    phase: str = "key"  # "key": a keyword or ")"; "value"; "string": inside a string value; "after": "," or ")"
    keys: set[str] = field(default_factory=set)
    quote: str = ""

    def read(self, parser: PythonicParser, final: bool) -> tuple[int | str, list[dict]]:
        text, pos, deltas = parser.buffer, 0, []
        while True:
            if self.phase != "string":
                pos = skip_ws(text, pos)
            if pos == len(text):
                parser.buffer = ""
                return WAIT, deltas
            c = text[pos]
            if self.phase in ("key", "after") and c == ")":
                return pos + 1, deltas + parser.fragment("}")
            if self.phase == "key":
                m = _KEYWORD.match(text, pos)  # at the end, "a=" may yet be "a=="
                if (m is None or m.end() == len(text)) and not final and (m or _KEYWORD_PARTIAL.fullmatch(text, pos)):
                    break
                if m is None or m.group(1) in self.keys:
                    return self._malformed(parser, text, pos, deltas)
                deltas += parser.fragment((", " if self.keys else "") + json.dumps(m.group(1)) + ": ")
                self.keys.add(m.group(1))
                pos, self.phase = m.end(), "value"
            elif self.phase == "value":
                if c in "'\"":
                    opening = text[pos:pos + 3]
                    if len(opening) < 3 and opening == c * len(opening) and not final:
                        break  # "" may yet open a triple-quoted string
                    if opening != c * 3:
                        self.quote, self.phase = c, "string"
                        deltas += parser.fragment('"')
                        pos += 1
                        continue
                pos, status = self._value(parser, text, pos, final, deltas)
                if status == MALFORMED:
                    return self._malformed(parser, text, pos, deltas)
                if status == WAIT:
                    break
            elif self.phase == "string":
                end, closed = _string_run(text, pos, self.quote)
                if end is None:
                    return self._malformed(parser, text, pos, deltas)
                if end > pos:
                    try:
                        chunk = ast.literal_eval(self.quote + text[pos:end] + self.quote)
                    except (SyntaxError, ValueError):
                        return self._malformed(parser, text, pos, deltas)
                    deltas += parser.fragment(json.dumps(chunk, ensure_ascii=False)[1:-1])
                pos = end
                if not closed:
                    break
                deltas += parser.fragment('"')
                pos, self.phase = pos + 1, "after"
            elif c == ",":  # "after" a value
                pos, self.phase = pos + 1, "key"
            else:
                return self._malformed(parser, text, pos, deltas)
        return self._wait(parser, text, pos, deltas)

    def _value(self, parser: PythonicParser, text: str, pos: int, final: bool, deltas: list[dict]):
        """A value other than a single-quoted string, whole: (where reading goes on, None), or
        (pos, WAIT) while it may go on, or (pos, MALFORMED)."""
        end = _value_end(text, pos)
        if end is None and final:
            end = len(text)  # cut by the end: sent if it is a whole literal already
        if end is None or end < 0:
            return pos, WAIT if end is None else MALFORMED
        value = _value(text[pos:end])
        if value == MALFORMED:
            return pos, (WAIT if end == len(text) else MALFORMED)
        deltas += parser.fragment(value)
        self.phase = "after"
        return end, None

    @staticmethod
    def _wait(parser: PythonicParser, text: str, pos: int, deltas: list[dict]) -> tuple[str, list[dict]]:
        parser.buffer = text[pos:]
        return WAIT, deltas

    @staticmethod
    def _malformed(parser: PythonicParser, text: str, pos: int, deltas: list[dict]) -> tuple[str, list[dict]]:
        parser.buffer = text[pos:]
        return MALFORMED, deltas


def _string_run(text: str, pos: int, quote: str) -> tuple[int | None, bool]:
    """How far a single-quoted Python string's body at ``pos`` can be decoded now: (the end of
    its whole characters and escapes, whether its closing quote is next), or (None, False) at a
    raw newline (no string). An escape the text ends inside is left for the next read."""
    i = pos
    while i < len(text):
        c = text[i]
        if c == quote:
            return i, True
        if c == "\n":
            return None, False
        if c == "\\":
            n = text[i + 1:i + 2]
            if n == "N":
                close = text.find("}", i)
                length = None if close < 0 else close - i + 1
            elif n and n in "01234567":
                digits = re.match(r"[0-7]{1,3}", text[i + 1:i + 4]).group()
                length = 1 + len(digits) if len(digits) == 3 or i + 1 + len(digits) < len(text) else None
            else:
                length = _ESCAPE_LENGTH.get(n, 2) if n else None
            if length is None or i + length > len(text):
                return i, False
            i += length
        else:
            i += 1
    return i, False


def _value_end(text: str, pos: int) -> int | None:
    """Where the value at ``pos`` ends: the "," or ")" after it outside brackets and strings;
    None while it has not ended, -1 at a closing "]" or "}" that nothing opened."""
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
            if depth == 0:
                return i if c == ")" else -1
            depth -= 1
        elif c == "," and depth == 0:
            return i
    return None


def _value(source: str) -> str:
    """A Python literal (``true``, ``false``, ``null`` too) as JSON, or MALFORMED."""
    try:
        node = ast.parse(source.strip(), mode="eval").body
        return json.dumps(_literal(node), ensure_ascii=False, allow_nan=False)
    except (SyntaxError, ValueError, TypeError, RecursionError):
        return MALFORMED


def _literal(node: ast.expr):
    """``ast.literal_eval``, with ``true``, ``false`` and ``null`` at any depth."""
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    return ast.literal_eval(node)


def grammar(tools: list[dict], parallel: bool) -> str:
    raise InvalidRequest("tool_choice", "calls in the pythonic format cannot be forced here: send tool_choice "
                         "'auto' (or serve the model with another --tool-parser)")
