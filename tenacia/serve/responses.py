"""Engine output -> OpenAI response objects, whole or as server-sent-event chunks.

``Shape`` knows the two endpoints' formats (``chat.completion`` and ``text_completion``);
``Collected`` gathers the deltas of a request for a non-streamed answer and for ``usage``.
For a thinking model (``reasoning.py``) ``Collected`` splits each chat choice's text into
reasoning and content as the deltas arrive, and with tools (``tools/``) it takes the tool calls
out of the content; both answers show what it split, so streamed equals whole.
A completion with ``echo`` starts each choice with its prompt's text and, with ``logprobs``, its
prompt's tokens (the first token has no logprob: ``null``), then the generated ones.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tokenizers import Tokenizer

from .engine.llm_engine import ChoiceDelta
from .engine.sequence import TokenLogprob
from .reasoning import ThinkSplitter
from .tools import ToolCallParser


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a byte-level BPE uses -> the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTES = _byte_decoder()


class TokenText:
    """A token's text and bytes, as OpenAI's logprobs report them."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def key(self, token_id: int) -> str:
        """The token as the completions endpoint names it. A token that is only part of a UTF-8
        character decodes to U+FFFD, like every other such token, so it is named by its bytes
        instead, as OpenAI does ("bytes:\\xe2\\x80"): the top alternatives are a dict keyed by
        this name, and two different byte tokens must not collapse into one entry."""
        text = self.text(token_id)
        if "\ufffd" not in text:
            return text
        return "bytes:" + "".join(f"\\x{b:02x}" for b in self.bytes(token_id))

    def bytes(self, token_id: int) -> list[int]:
        piece = self.tokenizer.id_to_token(token_id) or ""
        if piece and all(c in _BYTES for c in piece):
            return [_BYTES[c] for c in piece]
        return list(self.text(token_id).encode("utf-8"))


class Piece(NamedTuple):
    """What one delta adds to its choice, once split."""

    reasoning: str
    content: str
    tool_calls: list[dict]  # OpenAI tool_calls deltas
    finish_reason: str | None  # "tool_calls" instead of "stop" once the choice made calls
    parts: list[str | dict]  # content and tool_calls in the order written (content strings, call deltas)


def feed_in_order(parser: ToolCallParser, text: str, final: bool) -> tuple[ToolCallParser, list[str | dict]]:
    """Feed ``text`` to ``parser``: (the parser, its content strings and call deltas in the order
    the model wrote them). A parser answers one feed with its content and its deltas apart; when
    one feed holds both (text and a call's end, then more text), the feed is read again from a
    copy, a character at a time, to learn which came first (the parser's contract: any cut gives
    the same calls and content)."""
    before = copy.deepcopy(parser)
    content, deltas = parser.feed(text, final)
    if not (content and deltas):
        return parser, ([content] if content else []) + deltas
    parser, parts = before, []
    for i, ch in enumerate(text):
        content, deltas = parser.feed(ch, final and i == len(text) - 1)
        for part in ([content] if content else []) + deltas:
            last = parts[-1] if parts else None
            if isinstance(part, str) and isinstance(last, str):
                parts[-1] = last + part
            elif (isinstance(part, dict) and isinstance(last, dict) and "id" not in part
                  and last["index"] == part["index"]):
                parts[-1] = {**last, "function": {**last["function"],
                                                  "arguments": last["function"]["arguments"] + part["function"]["arguments"]}}
            else:
                parts.append(part)
    return parser, parts


@dataclass(slots=True)
class Collected:
    """Everything a request produced so far, per choice index. ``think``: a new splitter for a
    choice (``ThinkSplitter.for_prompt``) when answers are split into reasoning and content."""

    prompt_tokens: int
    think: Callable[[], ThinkSplitter] | None = None
    tools: Callable[[], ToolCallParser] | None = None  # a parser per choice, when tools are shown
    splitters: dict[int, ThinkSplitter] = field(default_factory=dict)
    parsers: dict[int, ToolCallParser] = field(default_factory=dict)
    reasoning: dict[int, str] = field(default_factory=dict)
    texts: dict[int, str] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    prompt_logprobs: dict[int, list[TokenLogprob | None]] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)
    # with tools: each choice's content strings and call indices, in the order written
    order: dict[int, list[str | int]] = field(default_factory=dict)

    def add(self, deltas: list[ChoiceDelta]) -> list[Piece]:
        """Take ``deltas``; returns what each adds, split into reasoning, content and tool calls."""
        pieces = []
        for d in deltas:
            if d.prompt_logprobs is not None:
                self.prompt_logprobs[d.index] = d.prompt_logprobs
            final = d.finish_reason is not None
            reasoning, content, calls, reason = "", d.text, [], d.finish_reason
            if self.think is not None:
                splitter = self.splitters.setdefault(d.index, self.think())
                reasoning, content = splitter.feed(d.text, len(d.token_ids), final=final)
                self.reasoning[d.index] = self.reasoning.get(d.index, "") + reasoning
            parts: list[str | dict] = [content] if content else []
            if self.tools is not None:
                parser, parts = feed_in_order(self.parsers.setdefault(d.index, self.tools()), content, final)
                self.parsers[d.index] = parser
                content = "".join(p for p in parts if isinstance(p, str))
                calls = [p for p in parts if isinstance(p, dict)]
                if parser.calls and reason == "stop":
                    reason = "tool_calls"
                order = self.order.setdefault(d.index, [])
                for part in parts:
                    if isinstance(part, dict):
                        order += [part["index"]] if "id" in part else []
                    elif order and isinstance(order[-1], str):
                        order[-1] += part
                    else:
                        order.append(part)
            pieces.append(Piece(reasoning, content, calls, reason, parts))
            self.texts[d.index] = self.texts.get(d.index, "") + content
            self.tokens[d.index] = d.completion_tokens
            self.logprobs.setdefault(d.index, []).extend(d.logprobs)
            self.finish[d.index] = reason
        return pieces

    def usage(self) -> dict[str, Any]:
        completion = sum(self.tokens.values())
        usage: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                                 "total_tokens": self.prompt_tokens + completion}
        if self.think is not None:
            reasoning = sum(s.reasoning_tokens for s in self.splitters.values())
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage


class Shape:
    """Response format of one endpoint. ``chat``: chat.completion; else text_completion.
    ``echo``: each prompt's token ids when the completion echoes them (choice ``i`` answers
    prompt ``i // n``), else None."""

    def __init__(self, chat: bool, model: str, token_text: TokenText, want_logprobs: bool,
                 echo: list[list[int]] | None = None, n: int = 1):
        self.chat, self.model, self.tt, self.want_logprobs = chat, model, token_text, want_logprobs
        self.echo, self.n = echo, n
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _envelope(self, chunk: bool) -> dict[str, Any]:
        obj = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def echoed(self, index: int, prompt_logprobs: list[TokenLogprob | None] | None) -> tuple[str, list]:
        """The echoed prompt of choice ``index``: its text and, with logprobs, its scored tokens."""
        if self.echo is None:
            return "", []
        ids = self.echo[index // self.n]
        text = self.tt.tokenizer.decode(ids, skip_special_tokens=False)
        if not self.want_logprobs:
            return text, []
        scored = prompt_logprobs or [None] * len(ids)
        return text, [lp if lp is not None else TokenLogprob(token_id=t, logprob=None, top=None)
                      for t, lp in zip(ids, scored, strict=True)]

    def logprobs(self, items: list[TokenLogprob], text_offset: int = 0) -> dict[str, Any] | None:
        """OpenAI's logprobs of ``items``; a prompt's first token has ``logprob`` and ``top`` None."""
        if not self.want_logprobs:
            return None
        if self.chat:
            return {"content": [{"token": self.tt.text(lp.token_id), "logprob": lp.logprob,
                                 "bytes": self.tt.bytes(lp.token_id),
                                 "top_logprobs": [{"token": self.tt.text(t), "logprob": v,
                                                   "bytes": self.tt.bytes(t)} for t, v in lp.top]}
                                for lp in items]}
        offsets, pos = [], text_offset
        for lp in items:
            offsets.append(pos)
            pos += len(self.tt.text(lp.token_id))
        return {"tokens": [self.tt.key(lp.token_id) for lp in items], "token_logprobs": [lp.logprob for lp in items],
                "top_logprobs": [None if lp.top is None else {self.tt.key(t): v for t, v in lp.top} for lp in items],
                "text_offset": offsets}

    def response(self, got: Collected) -> dict[str, Any]:
        choices = []
        for i in sorted(got.texts):
            choice: dict[str, Any] = {"index": i}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": got.texts[i]}
                if got.think is not None:  # both names: DeepSeek's (and SGLang's, llama.cpp's), vLLM's
                    reasoning = got.reasoning.get(i) or None
                    choice["message"].update(reasoning_content=reasoning, reasoning=reasoning)
                calls = got.parsers[i].calls if i in got.parsers else []
                if calls:
                    choice["message"]["tool_calls"] = calls
                    choice["message"]["content"] = got.texts[i] if got.texts[i].strip() else None
                choice["logprobs"] = self.logprobs(got.logprobs.get(i, []))
            else:
                text, items = self.echoed(i, got.prompt_logprobs.get(i))
                choice["text"] = text + got.texts[i]
                choice["logprobs"] = self.logprobs(items + got.logprobs.get(i, []))
            choice["finish_reason"] = got.finish[i]
            choices.append(choice)
        return {**self._envelope(chunk=False), "choices": choices, "usage": got.usage()}

    # a chat stream's opening (the role) goes out with its first token, as vLLM's server sends
    # it: a client that times the first chunk (vllm bench serve) then measures the time to the
    # first token, not to the headers
    opening_waits_for_first_token = True

    def start(self, indices: range, include_usage: bool) -> str:
        """A stream's first event: chat streams open each choice with the assistant role (sent
        with the first token: ``opening_waits_for_first_token``)."""
        if not self.chat:
            return ""
        choices = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None} for i in indices]
        return self._sse(choices, include_usage)

    def end(self, got: Collected, include_usage: bool) -> str:
        """A stream's last events: the usage chunk (when asked for), then ``[DONE]``."""
        return (self.usage_chunk(got) if include_usage else "") + "data: [DONE]\n\n"

    def error(self, body: dict[str, Any]) -> str:
        return "data: " + json.dumps(body) + "\n\n"

    def chunk(self, deltas: list[ChoiceDelta], include_usage: bool, offsets: dict[int, int],
              pieces: list[Piece]) -> str | None:
        """The event for ``deltas``; ``pieces``: what each adds, from ``Collected.add``."""
        choices = []
        for d, (reasoning, content, calls, reason, _) in zip(deltas, pieces, strict=True):
            echo_due = self.echo is not None and d.index not in offsets
            if (not content and not reasoning and not calls and reason is None
                    and not (self.want_logprobs and d.logprobs) and not echo_due):
                continue  # nothing to say yet (held-back bytes, a possible stop string or tag)
            choice: dict[str, Any] = {"index": d.index}
            text, items = self.echoed(d.index, d.prompt_logprobs) if echo_due else ("", [])
            text, items = text + content, items + d.logprobs
            if self.chat:
                choice["delta"] = {"content": text} if text else {}
                if reasoning:
                    choice["delta"].update(reasoning_content=reasoning, reasoning=reasoning)
                if calls:
                    choice["delta"]["tool_calls"] = calls
            else:
                choice["text"] = text
            choice["logprobs"] = self.logprobs(items, offsets.get(d.index, 0)) if items else None
            choice["finish_reason"] = reason
            # text_offset counts each token's own text, as the whole answer does (a held-back
            # partial character would otherwise shift the streamed offsets)
            offsets[d.index] = offsets.get(d.index, 0) + sum(len(self.tt.text(lp.token_id)) for lp in items)
            choices.append(choice)
        return self._sse(choices, include_usage) if choices else None

    def usage_chunk(self, got: Collected) -> str:
        return "data: " + json.dumps({**self._envelope(chunk=True), "choices": [], "usage": got.usage()}) + "\n\n"

    def _sse(self, choices: list[dict[str, Any]], include_usage: bool) -> str:
        body = {**self._envelope(chunk=True), "choices": choices}
        if include_usage:
            body["usage"] = None
        return "data: " + json.dumps(body) + "\n\n"
