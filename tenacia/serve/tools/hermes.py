"""The Hermes / Qwen format: each call is a block ``<tool_call>\\n{"name": ..., "arguments":
{...}}\\n</tool_call>``, anywhere in the answer, any number of them; text around blocks is content.

A block is held from its ``<tool_call>`` until its ``</tool_call>``, then parsed whole (a block
whose JSON is no call, or that never closes, stays content, tags included)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..reasoning import partial_suffix
from .calls import ToolCallParser, as_call, calls_json

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass(slots=True)
class HermesParser(ToolCallParser):
    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
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
            else:
                deltas += self.emit(*call)
        return content, deltas


def _parse(body: str) -> tuple[str, str] | None:
    try:
        return as_call(json.loads(body))
    except ValueError:
        return None


def grammar(tools: list[dict], parallel: bool) -> str:
    """Lark: one block of a call of any of ``tools`` (one or more when ``parallel``)."""
    more = ' ("\\n" call)*' if parallel else ""
    return f'start: call{more}\ncall: "{OPEN}\\n" {calls_json(tools, "arguments")} "\\n{CLOSE}"\n'
