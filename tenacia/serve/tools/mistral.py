"""The Mistral format: ``[TOOL_CALLS]`` then a JSON list of calls ``[{"name": ..., "arguments":
{...}}, ...]``; text before the tag is content, and so is text after the list. Call ids are 9
letters and digits, as Mistral's chat templates require of the ids sent back to them.

The list is read one object at a time, each call released when its object closes. Once an
item is no call or the list is malformed, the rest of the answer (from that item) is content.
(The ``[TOOL_CALLS]name[ARGS]{...}`` form of Mistral's 2025 tokenizers is not read.)"""

from __future__ import annotations

from dataclasses import dataclass

from ..reasoning import partial_suffix
from .calls import (
    FAIL,
    WAIT,
    ToolCallParser,
    as_call,
    calls_json,
    decode_object,
    expect,
    mistral_id,
    skip_ws,
)

TAG = "[TOOL_CALLS]"


@dataclass(slots=True)
class MistralParser(ToolCallParser):
    state: str = "text"  # "text": before the tag; "open": tag seen; "sep": after a call; "after": past "]"

    def new_id(self) -> str:
        return mistral_id()

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        self.buffer += text
        content, deltas = "", []
        if self.state == "text":
            start = self.buffer.find(TAG)
            if start < 0:
                keep = 0 if final else partial_suffix(self.buffer, TAG)
                content, self.buffer = self.buffer[:len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
                return content, deltas
            content, self.buffer, self.state = self.buffer[:start], self.buffer[start:], "open"
        while self.state in ("open", "sep") and self.buffer:
            step = self._next(final)
            if step == WAIT:
                break
            if step == FAIL:
                self.state = "after"
            else:
                end, call = step
                self.buffer = self.buffer[end:]
                if call is not None:
                    deltas += self.emit(*call)
        if self.state == "after" or final:
            content, self.buffer = content + self.buffer, ""
        return content, deltas

    def _next(self, final: bool):
        """The end of the next step and its call (None for the list's "]"), WAIT or FAIL. The tag
        and "[" are read with the first call, a "," with the next: on FAIL they are content."""
        text = self.buffer
        if self.state == "open":
            pos = expect(text, 0, TAG, final)
            if pos in (WAIT, FAIL):
                return pos
            pos = expect(text, skip_ws(text, pos), "[", final)
        else:
            pos = skip_ws(text, 0)
            if pos < len(text) and text[pos] == "]":
                self.state = "after"
                return pos + 1, None
            pos = expect(text, pos, ",", final)
        if pos in (WAIT, FAIL):
            return pos
        found = decode_object(text, skip_ws(text, pos), final)
        if found in (WAIT, FAIL):
            return found
        call = as_call(found[0], ("arguments", "parameters"))
        if call is None:
            return FAIL
        self.state = "sep"
        return found[1], call


def grammar(tools: list[dict], parallel: bool) -> str:
    """Lark: the tag and a list of one call of any of ``tools`` (or more when ``parallel``)."""
    more = ' (", " call)*' if parallel else ""
    return f'start: "{TAG}[" call{more} "]"\ncall: {calls_json(tools, "arguments")}\n'
