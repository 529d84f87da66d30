"""Drives an ``LLMEngine`` from one background thread for asyncio callers.

Contract:
- ``submit`` checks a request at once (raising ``InvalidRequest`` before anything is queued) and
  returns a ``RequestHandle`` whose ``deltas()`` yields each step's ``ChoiceDelta`` list until
  every choice has finished.
- Only the engine thread touches the engine's state; callers talk to it through a command queue,
  and it hands results back with ``call_soon_threadsafe``.
- ``cancel()`` (called when a client disconnects, or by ``deltas()`` when its consumer stops
  early) aborts the request's sequences at the next step boundary and frees their cache blocks.
- An exception inside a step fails the requests in flight with ``EngineError`` and aborts them;
  the thread and the server keep running.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections.abc import AsyncIterator

from .llm_engine import ChoiceDelta, LLMEngine
from .sequence import SamplingParams

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine failed while running this request (the message says why)."""


class RequestHandle:
    """One API request: one or more prompts, ``n`` choices each. Choice ``j`` of prompt ``p`` is
    reported as index ``p * n + j``."""

    def __init__(self, engine: AsyncEngine, request_id: str, num_prompts: int, n: int,
                 loop: asyncio.AbstractEventLoop):
        self.engine, self.request_id, self.n = engine, request_id, n
        self.parts = [f"{request_id}-{p}" for p in range(num_prompts)]
        self.remaining = num_prompts * n
        self.loop = loop
        self.queue: asyncio.Queue[list[ChoiceDelta] | BaseException] = asyncio.Queue()

    async def deltas(self) -> AsyncIterator[list[ChoiceDelta]]:
        try:
            while self.remaining:
                item = await self.queue.get()
                if isinstance(item, BaseException):
                    raise item
                self.remaining -= sum(1 for d in item if d.finish_reason is not None)
                yield item
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Abort whatever is still running (a no-op once every choice finished)."""
        if self.remaining:
            self.remaining = 0
            self.engine._post(("abort", self))

    def _put(self, item: list[ChoiceDelta] | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass


class AsyncEngine:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._parts: dict[str, tuple[RequestHandle, int]] = {}  # engine request id -> (handle, offset)
        self._ids = itertools.count()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tenacia-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the steps in flight, then stop the thread; requests still queued are aborted."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, prompts: list[list[int]], params: SamplingParams) -> RequestHandle:
        """Queue a request; must be called from the event loop that will read its deltas."""
        for prompt in prompts:
            self.engine.check(prompt, params)
        handle = RequestHandle(self, f"req{next(self._ids)}", len(prompts), params.n,
                               asyncio.get_running_loop())
        self._post(("add", handle, prompts, params))
        return handle

    def _post(self, command: tuple) -> None:
        self._commands.put(command)
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._apply_commands()
            if self._stopping:
                for handle, _ in list(self._parts.values()):
                    self._abort(handle)
                return
            if not self.engine.has_work():
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                deltas = self.engine.step()
            except Exception as e:  # never let one bad step take the server down
                log.exception("engine step failed")
                self._fail_all(EngineError(f"the engine failed during a step: {type(e).__name__}: {e}"))
                continue
            self._dispatch(deltas)

    def _apply_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command[0] == "add":
                _, handle, prompts, params = command
                try:
                    for p, (part, prompt) in enumerate(zip(handle.parts, prompts, strict=True)):
                        self.engine.add_request(part, prompt, params)
                        self._parts[part] = (handle, p * params.n)
                except Exception as e:
                    self._abort(handle)
                    handle._put(EngineError(str(e)))
            else:
                self._abort(command[1])

    def _abort(self, handle: RequestHandle) -> None:
        for part in handle.parts:
            self.engine.abort(part)
            self._parts.pop(part, None)

    def _dispatch(self, deltas: list[ChoiceDelta]) -> None:
        by_handle: dict[int, tuple[RequestHandle, list[ChoiceDelta]]] = {}
        for d in deltas:
            entry = self._parts.get(d.request_id)
            if entry is None:  # aborted meanwhile
                continue
            handle, offset = entry
            d.index += offset
            by_handle.setdefault(id(handle), (handle, []))[1].append(d)
        for handle, items in by_handle.values():
            handle._put(items)
        finished = {d.request_id for d in deltas if d.finish_reason is not None}
        for part in finished:
            if not any(s.request_id == part for s in (*self.engine.scheduler.running, *self.engine.scheduler.waiting)):
                self._parts.pop(part, None)

    def _fail_all(self, error: EngineError) -> None:
        for handle in {id(h): h for h, _ in self._parts.values()}.values():
            self._abort(handle)
            handle._put(error)
