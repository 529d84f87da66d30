"""The Llama-3 JSON format: the whole answer is a call ``{"name": ..., "parameters": {...}}``,
possibly after ``<|python_tag|>``; Llama 3.2 writes several calls separated by ``;``.

The answer is calls only if it starts (after whitespace) with ``{`` or the tag; anything else
is content from its first character. Calls are read one call object at a time (``calls.py``:
the arguments stream once the head has arrived); once an object is no call, or something other
than ``;`` follows one, the rest of the answer is content. Whitespace after the last call is
dropped."""

from __future__ import annotations

from dataclasses import dataclass

from .calls import FAIL, WAIT, ToolCallParser, calls_json, expect, skip_ws

TAG = "<|python_tag|>"
KEYS = ("parameters", "arguments")


@dataclass(slots=True)
class Llama3JsonParser(ToolCallParser):
    state: str = "start"  # "start": undecided; "calls": between calls; "call": arguments streaming; "content": the rest

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        self.buffer += text
        deltas: list[dict] = []
        while self.state != "content" and (self.buffer or final and self.state == "call"):
            if self.state == "call":
                fragments, over = self.stream_call(final)
                deltas += fragments
                if not over:
                    break
                self.state = "calls"
                continue
            step = self._next(final)
            if step == WAIT:
                break
            if step == FAIL:
                self.state = "content"
            elif step is None:  # only whitespace after the last call, and the answer is over
                self.buffer = ""
            else:
                end, opened = step
                self.buffer, self.state = self.buffer[end:], "call" if self.streaming else "calls"
                deltas += opened
        content = ""
        if self.state == "content":
            content, self.buffer = self.buffer, ""
        return content, deltas

    def _next(self, final: bool):
        """Where reading goes on and the deltas of the next call, WAIT, FAIL, or None (nothing
        more to read)."""
        text = self.buffer
        pos = skip_ws(text, 0)
        if self.state == "start":
            if text.startswith(TAG, pos):
                pos = skip_ws(text, pos + len(TAG))
            elif pos == len(text) or (TAG.startswith(text[pos:]) and not final):
                return FAIL if final else WAIT
        else:
            if pos == len(text) and final:
                return None
            pos = expect(text, pos, ";", final)
            if pos in (WAIT, FAIL):
                return pos
            pos = skip_ws(text, pos)
        if pos == len(text) and not final:
            return WAIT
        return self.start_call(pos, final, KEYS)


def grammar(tools: list[dict], parallel: bool) -> str:
    """Lark: a call of any of ``tools`` (several, ``; ``-separated, when ``parallel``)."""
    more = ' ("; " call)*' if parallel else ""
    return f'start: call{more}\ncall: {calls_json(tools, "parameters")}\n'
