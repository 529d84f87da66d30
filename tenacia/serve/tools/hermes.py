"""The Hermes / Qwen format: each call is a block ``<tool_call>\\n{"name": ..., "arguments":
{...}}\\n</tool_call>``, anywhere in the answer, any number of them; text around blocks is content.

After ``<tool_call>`` the call object is read as ``calls.py`` says (its arguments streaming once
its head has arrived); ``</tool_call>`` ends a call wherever it comes. A block whose object is
no call (malformed before its arguments, no name), or that ends before its head, is content,
tags included."""

from __future__ import annotations

from dataclasses import dataclass

from .calls import FAIL, WAIT, ToolCallParser, calls_json, expect, skip_ws

OPEN, CLOSE = "<tool_call>", "</tool_call>"
KEYS = ("arguments", "parameters")


@dataclass(slots=True)
class HermesParser(ToolCallParser):
    state: str = "text"  # "text": between blocks; "block": after <tool_call>; "call": arguments streaming; "close": before </tool_call>

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        self.buffer += text
        content, deltas = "", []
        while True:
            if self.state == "text":
                before, found = self.text_until(OPEN, final)
                content += before
                if found < 0:
                    break
                self.buffer, self.state = self.buffer[len(OPEN):], "block"
            elif self.state == "block":
                step = self.start_call(skip_ws(self.buffer, 0), final, KEYS)
                if step == WAIT:
                    break
                if step == FAIL:  # no call: the tag is content, and what follows is read as text
                    content, self.state = content + OPEN, "text"
                else:
                    end, opened = step
                    self.buffer, self.state = self.buffer[end:], "call" if self.streaming else "close"
                    deltas += opened
            elif self.state == "call":
                fragments, over = self.stream_call(final, fence=CLOSE)
                deltas += fragments
                if not over:
                    break
                self.state = "close"
            else:  # "close": whitespace, then the closing tag
                pos = skip_ws(self.buffer, 0)
                end = expect(self.buffer, pos, CLOSE, final)
                if end == WAIT:
                    break
                self.buffer, self.state = self.buffer[pos if end == FAIL else end:], "text"
        return content, deltas


def grammar(tools: list[dict], parallel: bool) -> str:
    """Lark: one block of a call of any of ``tools`` (one or more when ``parallel``)."""
    more = ' ("\\n" call)*' if parallel else ""
    return f'start: call{more}\ncall: "{OPEN}\\n" {calls_json(tools, "arguments")} "\\n{CLOSE}"\n'
