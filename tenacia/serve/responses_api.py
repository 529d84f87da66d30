"""OpenAI's Responses API (``POST /v1/responses``), stateless: a request becomes a chat request
(``to_chat_request``) run by the chat machinery, and its output is shaped as a ``response``
(``ResponseShape``), whole or as the documented stream of typed events.

Contract:
- ``input``: a string, or items: messages (``role`` with text or ``input_text``/``output_text``
  parts), ``function_call`` and ``function_call_output``; ``reasoning`` items are dropped (as
  thinking templates drop earlier thinking). ``instructions`` is a system message before them.
- ``tools`` (function tools only), ``tool_choice``, ``parallel_tool_calls``, ``text.format``
  (text, json_object, json_schema) and the sampling fields map to their chat counterparts.
- Nothing is stored: ``previous_response_id`` is a 400 (send the whole conversation as
  ``input``), ``store`` is accepted and has no effect. A field that would change the output and
  is not implemented (``reasoning.effort``, built-in tools, non-text input) is a 400 naming it.
- Output items: ``reasoning`` (a thinking model's), then a ``message`` with ``output_text`` per
  run of text and a ``function_call`` per call, in the order written (``ResponseShape``); ``status`` "incomplete" with ``incomplete_details.reason``
  "max_output_tokens" when cut by length. The stream's events, each with ``sequence_number``:
  response.created, response.in_progress, then per item output_item.added, its deltas
  (output_text.delta, reasoning_text.delta, function_call_arguments.delta) and closing events,
  output_item.done, and response.completed holding the whole response.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from .engine.llm_engine import ChoiceDelta
from .engine.sequence import InvalidRequest
from .protocol import ChatRequest
from .responses import Collected, Piece, TokenText


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    text: dict[str, Any] | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    reasoning: dict[str, Any] | None = None


def to_chat_request(req: ResponsesRequest) -> ChatRequest:
    """The chat request that produces this response (InvalidRequest naming what cannot be run)."""
    if req.previous_response_id is not None:
        raise InvalidRequest("previous_response_id", "responses are not stored here: send the whole "
                             "conversation as input instead of previous_response_id")
    if req.reasoning and req.reasoning.get("effort") is not None:
        raise InvalidRequest("reasoning.effort", "this model has no reasoning effort setting")
    messages = [{"role": "system", "content": req.instructions}] if req.instructions else []
    items = [{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    for i, item in enumerate(items):
        messages += _message(item, i, messages)
    body: dict[str, Any] = {"model": req.model, "messages": messages, "max_tokens": req.max_output_tokens,
                            "temperature": req.temperature, "top_p": req.top_p, "stream": req.stream,
                            "parallel_tool_calls": req.parallel_tool_calls}
    if req.tools:
        body["tools"] = [_tool(t, i) for i, t in enumerate(req.tools)]
    if req.tool_choice is not None:
        choice = req.tool_choice
        body["tool_choice"] = ({"type": "function", "function": {"name": choice.get("name")}}
                               if isinstance(choice, dict) else choice)
    fmt = (req.text or {}).get("format")
    if fmt is not None:
        body["response_format"] = (fmt if fmt.get("type") != "json_schema" else
                                   {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}})
    return ChatRequest.model_validate({k: v for k, v in body.items() if v is not None})


def _message(item: dict[str, Any], i: int, so_far: list[dict]) -> list[dict]:
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                    raise InvalidRequest(f"input[{i}].content[{j}]", f"input[{i}].content[{j}] must be a text part "
                                         "(input_text or output_text); this model reads text only")
                parts.append(part.get("text", ""))
            content = "".join(parts)
        return [{"role": item.get("role"), "content": content}]
    if kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")}}
        if so_far and so_far[-1]["role"] == "assistant" and so_far[-1].get("tool_calls"):
            so_far[-1]["tool_calls"].append(call)  # parallel calls: one assistant turn
            return []
        return [{"role": "assistant", "content": None, "tool_calls": [call]}]
    if kind == "function_call_output":
        output = item.get("output")
        return [{"role": "tool", "tool_call_id": item.get("call_id"),
                 "content": output if isinstance(output, str) else json.dumps(output)}]
    if kind == "reasoning":
        return []
    raise InvalidRequest(f"input[{i}].type", f"input[{i}].type must be message, function_call, "
                         f"function_call_output or reasoning, got {kind!r}")


def _tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise InvalidRequest(f"tools[{i}].type", f"only function tools are supported, got {tool.get('type')!r}")
    return {"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters") if k in tool}}


class ResponseShape:
    """A ``response`` object and its stream of events, for one request (module docstring).

    Output items follow the answer's order: reasoning, then a ``message`` for each run of text
    and a ``function_call`` for each call, as written (text after a call is a new message item).
    A run of text that is only whitespace (the newline between two calls) is no item, unless the
    answer has no other item. Streamed, whitespace is held until text follows it, so the stream
    opens exactly the items the whole response holds."""

    def __init__(self, req: ResponsesRequest, model: str, token_text: TokenText):
        self.req, self.model, self.tt = req, model, token_text
        self.id, self.created = f"resp_{uuid.uuid4().hex[:24]}", int(time.time())
        self.rs_id = f"rs_{uuid.uuid4().hex[:24]}"
        self.msg_ids: list[str] = []  # one per message item, in output order
        self.seq = 0
        self.open: list[str] = []  # items added to the stream, in output order: "reasoning", "msgK", "callI"
        self.closed: set[str] = set()
        self.reasoning, self.calls = "", []
        self.texts: list[str] = []  # the text of each message item streamed
        self.pending = ""  # whitespace not yet placed in an item

    def response(self, got: Collected) -> dict[str, Any]:
        calls = got.parsers[0].calls if 0 in got.parsers else []
        order = got.order.get(0, [got.texts.get(0, "")])
        return self._object(got.reasoning.get(0, ""), order, calls, got.finish.get(0), got)

    def _msg_id(self, k: int) -> str:
        while len(self.msg_ids) <= k:
            self.msg_ids.append(f"msg_{uuid.uuid4().hex[:24]}")
        return self.msg_ids[k]

    def _object(self, reasoning: str, order: list[str | int], calls: list[dict], finish: str | None,
                got: Collected | None, status: str | None = None) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        if reasoning:
            output.append(self._reasoning_item(reasoning))
        messages = 0
        for part in order:
            if isinstance(part, int):
                output.append(self._call_item(calls[part]))
            elif part.strip():
                output.append(self._message_item(messages, part))
                messages += 1
        if messages == 0 and not calls:
            output.append(self._message_item(0, "".join(p for p in order if isinstance(p, str))))
        usage = None
        if got is not None:
            u = got.usage()
            usage = {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
                     "total_tokens": u["total_tokens"],
                     "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                     "output_tokens_details": {"reasoning_tokens": u.get("completion_tokens_details", {})
                                               .get("reasoning_tokens", 0)}}
        cut = finish == "length"
        status = status or ("incomplete" if cut else "completed")
        r = self.req
        return {"id": self.id, "object": "response", "created_at": self.created, "status": status, "model": self.model,
                "output": output, "usage": usage, "error": None,
                "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
                "instructions": r.instructions, "max_output_tokens": r.max_output_tokens, "temperature": r.temperature,
                "top_p": r.top_p, "tools": r.tools or [], "tool_choice": r.tool_choice or "auto",
                "parallel_tool_calls": r.parallel_tool_calls, "text": r.text or {"format": {"type": "text"}},
                "previous_response_id": None, "store": False, "metadata": {}}

    def _message_item(self, k: int, text: str, status: str = "completed") -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
        return {"type": "message", "id": self._msg_id(k), "status": status, "role": "assistant", "content": content}

    def _reasoning_item(self, text: str) -> dict[str, Any]:
        return {"type": "reasoning", "id": self.rs_id, "summary": [],
                "content": [{"type": "reasoning_text", "text": text}] if text else []}

    @staticmethod
    def _call_item(call: dict, status: str = "completed") -> dict[str, Any]:
        return {"type": "function_call", "id": "fc_" + call["id"].removeprefix("call_"), "call_id": call["id"],
                "name": call["function"]["name"], "arguments": call["function"]["arguments"], "status": status}

    # the stream: start, chunk per step, end (the interface of responses.Shape)

    def _event(self, kind: str, **fields: Any) -> str:
        self.seq += 1
        return f"event: {kind}\ndata: " + json.dumps({"type": kind, "sequence_number": self.seq - 1, **fields}) + "\n\n"

    opening_waits_for_first_token = False  # response.created / in_progress go out at once

    def start(self, indices: range, include_usage: bool) -> str:
        shell = self._object("", [], [], None, None, status="in_progress")
        shell["output"] = []
        return self._event("response.created", response=shell) + self._event("response.in_progress", response=shell)

    def chunk(self, deltas: list[ChoiceDelta], include_usage: bool, offsets: dict[int, int],
              pieces: list[Piece]) -> str | None:
        events = []
        for piece in pieces:
            if piece.reasoning:
                if "reasoning" not in self.open:
                    events += self._add("reasoning", self._reasoning_item(""))
                self.reasoning += piece.reasoning
                events.append(self._event("response.reasoning_text.delta", item_id=self.rs_id,
                                          output_index=self.open.index("reasoning"), content_index=0,
                                          delta=piece.reasoning))
            for part in piece.parts:
                events += self._text(part) if isinstance(part, str) else self._call_delta(part)
        return "".join(events) or None

    def _text(self, text: str) -> list[str]:
        """Text of the answer: into the open message, else a new message once it is more than
        whitespace (closing the items before it)."""
        self.pending += text
        k = len(self.texts) - 1
        events = []
        if k < 0 or f"msg{k}" in self.closed:
            if not self.pending.strip():
                return []
            k, events = k + 1, self._open_message()
        delta, self.pending = self.pending, ""
        self.texts[k] += delta
        events.append(self._event("response.output_text.delta", item_id=self._msg_id(k),
                                  output_index=self.open.index(f"msg{k}"), content_index=0, delta=delta, logprobs=[]))
        return events

    def _open_message(self) -> list[str]:
        """A new message item (closing the items before it) and its output_text part."""
        k = len(self.texts)
        self.texts.append("")
        events = self._close("reasoning") + self._close_calls()
        events += self._add(f"msg{k}", self._message_item(k, "", "in_progress"))
        return events + [self._event("response.content_part.added", item_id=self._msg_id(k),
                                     output_index=self.open.index(f"msg{k}"), content_index=0,
                                     part={"type": "output_text", "text": "", "annotations": []})]

    def _add(self, kind: str, item: dict[str, Any]) -> list[str]:
        self.open.append(kind)
        return [self._event("response.output_item.added", output_index=len(self.open) - 1, item=item)]

    def _close(self, kind: str) -> list[str]:
        """The closing events of item ``kind`` ("reasoning" or "msgK"), if open and not closed yet."""
        if kind not in self.open or kind in self.closed:
            return []
        index = self.open.index(kind)
        self.closed.add(kind)
        if kind == "reasoning":
            return [self._event("response.reasoning_text.done", item_id=self.rs_id, output_index=index,
                                content_index=0, text=self.reasoning),
                    self._event("response.output_item.done", output_index=index,
                                item=self._reasoning_item(self.reasoning))]
        k = int(kind.removeprefix("msg"))
        text, item_id = self.texts[k], self._msg_id(k)
        part = {"type": "output_text", "text": text, "annotations": []}
        return [self._event("response.output_text.done", item_id=item_id, output_index=index, content_index=0,
                            text=text, logprobs=[]),
                self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=0,
                            part=part),
                self._event("response.output_item.done", output_index=index, item=self._message_item(k, text))]

    def _close_message(self) -> list[str]:
        return self._close(f"msg{len(self.texts) - 1}") if self.texts else []

    def _call_delta(self, delta: dict[str, Any]) -> list[str]:
        """A call opens with its id and name (closing the items before it); its arguments then
        arrive in fragments; it is done when the next item opens or the response ends."""
        if "id" in delta:
            self.pending = ""  # whitespace between items is no item
            events = self._close("reasoning") + self._close_message() + self._close_calls()
            call = {"id": delta["id"], "function": {"name": delta["function"]["name"], "arguments": ""}}
            self.calls.append(call)
            return events + self._add(f"call{delta['index']}", self._call_item(call, "in_progress"))
        call = self.calls[delta["index"]]
        call["function"]["arguments"] += delta["function"]["arguments"]
        index, item_id = self.open.index(f"call{delta['index']}"), "fc_" + call["id"].removeprefix("call_")
        return [self._event("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                            delta=delta["function"]["arguments"])]

    def _close_calls(self) -> list[str]:
        events = []
        for i, call in enumerate(self.calls):
            kind = f"call{i}"
            if kind not in self.closed:
                self.closed.add(kind)
                index, item_id = self.open.index(kind), "fc_" + call["id"].removeprefix("call_")
                events += [self._event("response.function_call_arguments.done", item_id=item_id, output_index=index,
                                       arguments=call["function"]["arguments"]),
                           self._event("response.output_item.done", output_index=index, item=self._call_item(call))]
        return events

    def end(self, got: Collected, include_usage: bool) -> str:
        closing = self._close("reasoning") + self._close_message() + self._close_calls()
        if not self.texts and not self.calls:  # no item but reasoning: the one message the whole answer has
            closing += self._open_message()
            if self.pending:
                closing += self._text("")
            closing += self._close("msg0")
        final = self.response(got)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return "".join(closing) + self._event(kind, response=final)

    def error(self, body: dict[str, Any]) -> str:
        return self._event("error", message=body["error"]["message"], code=body["error"]["code"])
