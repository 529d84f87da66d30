"""The Mistral formats, both read by one parser: ``[TOOL_CALLS]`` then either a JSON list of calls
``[{"name": ..., "arguments": {...}}, ...]`` (tokenizers before v11), or, from the v11 tokenizers
of 2025 (Mistral Small 3.1+, Devstral, Magistral), one call a tag: ``[TOOL_CALLS]name[ARGS]{...}``,
possibly with ``[CALL_ID]id`` before ``[ARGS]``, repeated for parallel calls. Text before a tag is
content, and so is text after the list. Call ids are 9 letters and digits, as Mistral's chat
templates require of the ids sent back to them (a ``[CALL_ID]`` the model wrote is kept).

The list is read one call object at a time, arguments streaming (``calls.py``); once an item is
no call or the list is malformed, the rest of the answer (from that item, or from the tag) is
content. In the v11 form the arguments stream from ``[ARGS]`` until their JSON value closes (or
the next tag, or the end). Forced calls (``grammar``) take the form the chat template writes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..engine.grammar import JSON_OPTIONS
from .calls import FAIL, WAIT, ToolCallParser, calls_json, expect, mistral_id, skip_ws

TAG, CALL_ID, ARGS = "[TOOL_CALLS]", "[CALL_ID]", "[ARGS]"
KEYS = ("arguments", "parameters")
_NAME, _ID = re.compile(r"[A-Za-z0-9_.\-]+"), re.compile(r"[A-Za-z0-9]*")


@dataclass(slots=True)
class MistralParser(ToolCallParser):
    # "text": before a tag; "tag": at a tag; "call": list-form arguments streaming; "sep": after
    # a list item; "args": v11 arguments streaming; "after": past the list (content only)
    state: str = "text"

    def new_id(self) -> str:
        return mistral_id()

    def feed(self, text: str, final: bool = False) -> tuple[str, list[dict]]:
        self.buffer += text
        content, deltas = "", []
        while True:
            if self.state == "text":
                before, found = self.text_until(TAG, final)
                content += before
                if found < 0:
                    break
                self.state = "tag"
            elif self.state in ("call", "args"):
                fragments, over = self.stream_call(final, fence=TAG if self.state == "args" else None,
                                                   value=self.state == "args")
                deltas += fragments
                if not over:
                    break
                self.state = "sep" if self.state == "call" else "text"
            elif self.state in ("tag", "sep"):
                step = self._tag(final) if self.state == "tag" else self._sep(final)
                if step == WAIT:
                    break
                if step == FAIL:
                    self.state = "after"
                else:
                    end, opened, self.state = step
                    self.buffer = self.buffer[end:]
                    deltas += opened
            else:  # "after"
                content, self.buffer = content + self.buffer, ""
                break
        return content, deltas

    def _tag(self, final: bool):
        """At a tag: (where reading goes on, deltas, next state), WAIT or FAIL. The tag (and a
        "[") are read with the first call: on FAIL they are content."""
        text = self.buffer
        pos = skip_ws(text, len(TAG))
        if pos == len(text):
            return FAIL if final else WAIT
        if text[pos] == "[":
            pos = skip_ws(text, pos + 1)
            return self._item(pos, final)
        name = _NAME.match(text, pos)
        if name is None:
            return FAIL
        end, call_id = name.end(), None
        if text.startswith(CALL_ID, end):
            found = _ID.match(text, end + len(CALL_ID))
            end, call_id = found.end(), found.group() or None
        elif not final and end < len(text) and CALL_ID.startswith(text[end:]) and not ARGS.startswith(text[end:]):
            return WAIT
        end = expect(text, end, ARGS, final)
        if end in (WAIT, FAIL):
            return end
        return end, self.begin(name.group(), call_id), "args"

    def _sep(self, final: bool):
        """After a list item: "]" ends the list, "," brings the next item."""
        text = self.buffer
        pos = skip_ws(text, 0)
        if pos < len(text) and text[pos] == "]":
            return pos + 1, [], "after"
        pos = expect(text, pos, ",", final)
        if pos in (WAIT, FAIL):
            return pos
        return self._item(skip_ws(text, pos), final)

    def _item(self, pos: int, final: bool):
        if pos == len(self.buffer) and not final:
            return WAIT
        step = self.start_call(pos, final, KEYS)
        if step in (WAIT, FAIL):
            return step
        end, opened = step
        return end, opened, "call" if self.streaming else "sep"


def grammar(tools: list[dict], parallel: bool, v11: bool = False) -> str:
    """Lark: the tag and a list of one call of any of ``tools`` (or more when ``parallel``); or,
    ``v11``, ``[TOOL_CALLS]name[ARGS]`` and the arguments, once (or more) a call."""
    if not v11:
        more = ' (", " call)*' if parallel else ""
        return f'start: "{TAG}[" call{more} "]"\ncall: {calls_json(tools, "arguments")}\n'
    calls = " | ".join(json.dumps(TAG + t["function"]["name"] + ARGS) + " %json"
                       + json.dumps({**(t["function"].get("parameters") or {"type": "object"}), "x-guidance": JSON_OPTIONS})
                       for t in tools)
    return f'start: call{"+" if parallel else ""}\ncall: {calls}\n'
