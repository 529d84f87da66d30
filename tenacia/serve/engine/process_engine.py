"""Runs the ``LLMEngine`` in a process of its own, for the asyncio HTTP server.

Why a process: the HTTP event loop and the engine then share neither a GIL nor a thread pool.
In one process, every one of the ~1,500 torch calls of a decode step has to take the GIL back
from the event loop, and the loop's work for each streamed token lands in the middle of the
engine's OpenMP parallel regions.

Contract:
- ``start_process`` spawns the worker, which loads the model on its device, and blocks until it
  is ready (raising with the worker's error otherwise); ``check`` then knows the model's limits.
- ``submit`` checks a request at once and returns a ``RequestHandle``; ``cancel`` aborts it.
- Engine metrics are recorded in the worker and replayed into the parent's ``ServeMetrics``.
- A choice whose sampling fails fails its own request with ``EngineError``, no other.
- If the worker dies, every request in flight fails with ``EngineError``, and so does every
  later ``submit`` (``dead`` says why; the server's /health reports it).
- The two processes talk only in the typed messages of ``messages.py``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import torch

from ...device_config import DeviceConfig
from ..config import EngineConfig
from ..heap import freeze_start_objects
from .cpu.host import HUGE_PAGES_ENV
from .llm_engine import ChoiceDelta, check_request
from .messages import Abort, Add, Deltas, EngineInfo, Failed, Ready, StepFailed, Stop, Stopped
from .sequence import SamplingParams

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine failed while running this request (the message says why)."""


class RequestHandle:
    """One API request: one or more prompts, ``n`` choices each. Choice ``j`` of prompt ``p`` is
    reported as index ``p * n + j``."""

    def __init__(self, engine: ProcessEngine, request_id: str, num_prompts: int, n: int):
        self.engine, self.request_id, self.n = engine, request_id, n
        self.parts = [f"{request_id}-{p}" for p in range(num_prompts)]
        self.remaining = num_prompts * n
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
            self.engine._cancel(self)

    def _put(self, item: list[ChoiceDelta] | BaseException) -> None:
        """In the event loop's thread, as the engine's messages are read there."""
        self.queue.put_nowait(item)


class Recorder:
    """``EngineMetrics`` that buffers calls, to replay them in another process."""

    def __init__(self):
        self.events: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.events.append((name, args))

    def drain(self) -> list[tuple[str, tuple]]:
        events, self.events = self.events, []
        return events


def exit_with_parent(parent: int, loaded: threading.Event, every_s: float = 0.5) -> threading.Thread:
    """A daemon thread that ends this process (exit code 1) once its parent ``parent`` is gone,
    until ``loaded`` is set. While the engine loads and times its kernels it reads no pipe, and
    it ignores SIGTERM: a server killed then would leave it running for the rest of its start."""
    def watch() -> None:
        while not loaded.wait(every_s):
            if os.getppid() != parent:
                os._exit(1)

    thread = threading.Thread(target=watch, name="tenacia-engine-parent-watch", daemon=True)
    thread.start()
    return thread


def worker_main(conn: Any, model: str, cfg: EngineConfig, device_cfg: DeviceConfig) -> None:
    """The engine process: load, report ``Ready`` (or ``Failed``), then serve messages and step
    (``EngineWorker``). It ignores SIGINT and SIGTERM (Ctrl-C reaches the whole process group):
    the server drains, then stops it with ``Stop``; if the server dies, the closed pipe ends it,
    or while loading, ``exit_with_parent``."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loaded = threading.Event()
    parent = mp.parent_process()
    if parent is not None and parent.pid is not None:
        exit_with_parent(parent.pid, loaded)

    from ...device import detect
    from ..models import load_model
    from .cpu.host import huge_pages_in_use, keep_freed_memory
    from .llm_engine import LLMEngine

    if device_cfg.threads:
        torch.set_num_threads(device_cfg.threads)
    keep_freed_memory()
    try:
        device = detect(device_cfg.type)
        served = load_model(model, device.torch, device.serve_dtype)
        recorder = Recorder()
        engine = LLMEngine(served.model, served.tokenizer, eos_ids=served.eos_ids, cfg=cfg,
                           device=device.torch, metrics=recorder)
        served.model = None  # the engine holds its own packed copy of the weights
        gc.collect()
        if cfg.warm_up:
            log.info("engine warm-up took %.2f s", engine.warm_up())
        engine.grammars.prepare()  # here, not in the middle of serving the first response_format
        freeze_start_objects()
    except Exception as e:
        conn.send(Failed(f"{type(e).__name__}: {e}"))
        return
    finally:
        loaded.set()
    kernels, products = engine.backend.describe()
    conn.send(Ready(EngineInfo(
        max_context=engine.max_context, vocab_size=served.config.vocab_size, capacity_tokens=engine.capacity_tokens,
        kv_bytes_per_token=engine.kv_bytes_per_token,
        device=device.type, dtype=str(device.serve_dtype).removeprefix("torch."),
        huge_page_bytes=huge_pages_in_use(), decode_kernels=kernels, products=products, pid=os.getpid())))
    EngineWorker(engine, conn, recorder).serve()


# An idle engine given a request waits for the rest of its burst (until no message for QUIET, at
# most MOST): else the first of requests sent together is prefilled alone and waits through the
# others' long prefill (docs/benchmarks.md, 2026-12-05: its TPOT twice the others' at 16 streams).
ARRIVAL_QUIET_S = 0.003
ARRIVAL_MOST_S = 0.025


class EngineWorker:
    """The engine process's loop: messages in (``messages.ToEngine``), steps while there is
    work, messages out. A request the engine refuses, or a step that raises, fails the requests
    it concerns (``StepFailed``) and the loop goes on serving the others. ``clock``: seconds,
    monotonic (tests pass a fake one)."""

    def __init__(self, engine: Any, conn: Any, recorder: Recorder, clock: Any = time.monotonic):
        self.engine, self.conn, self.recorder, self.clock = engine, conn, recorder, clock

    def serve(self) -> None:
        while self.receive():
            self.step()

    def receive(self) -> bool:
        """Handle every waiting message (waiting up to 1 s for one when idle, and when an idle
        engine is given work, for the rest of the burst: ``ARRIVAL_QUIET_S``, ``ARRIVAL_MOST_S``);
        False to stop."""
        idle = not self.engine.has_work()
        if not self.conn.poll(1.0 if idle else 0):
            return True
        until = self.clock() + ARRIVAL_MOST_S
        while True:
            if not self._handle_waiting():
                return False
            left = until - self.clock()
            if not (idle and self.engine.has_work()) or left <= 0 or not self.conn.poll(min(ARRIVAL_QUIET_S, left)):
                break
        if self.recorder.events and not self.engine.has_work():  # aborts' metrics, with no step to carry them
            self.conn.send(Deltas([], self.recorder.drain()))
        return True

    def _handle_waiting(self) -> bool:
        """Every message waiting now; False to stop."""
        while self.conn.poll(0):
            try:
                message = self.conn.recv()
            except EOFError:  # the server is gone
                return False
            match message:
                case Stop():
                    self.conn.send(Stopped())
                    return False
                case Add(parts=parts, prompts=prompts, params=params):
                    try:
                        for part, prompt in zip(parts, prompts, strict=True):
                            self.engine.add_request(part, prompt, params)
                    except Exception as e:
                        for part in parts:
                            self.engine.abort(part)
                        self.conn.send(StepFailed(parts, str(e)))
                case Abort(parts=parts):
                    for part in parts:
                        self.engine.abort(part)
        return True

    def step(self) -> None:
        if not self.engine.has_work():
            return
        try:
            deltas = self.engine.step()
        except Exception as e:  # fail what is running, keep serving
            log.exception("engine step failed")
            parts = sorted({s.request_id for s in (*self.engine.scheduler.running, *self.engine.scheduler.waiting)})
            for part in parts:
                self.engine.abort(part)
            self.conn.send(StepFailed(parts, f"the engine failed during a step: {type(e).__name__}: {e}"))
            return
        self.conn.send(Deltas(deltas, self.recorder.drain()))


class ProcessEngine:
    def __init__(self, model: str, cfg: EngineConfig, device: DeviceConfig | None = None, metrics: Any = None):
        self.model, self.cfg, self.metrics = model, cfg, metrics
        self.device = device or DeviceConfig()
        self.info: EngineInfo | None = None
        self.dead: str | None = None  # why the engine process is gone, once it is
        self._parts: dict[str, list] = {}  # engine request id -> [handle, index offset, choices left]
        self._ids = itertools.count()
        self._conn = None
        self._proc = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop watching the pipe, once started

    @property
    def capacity_tokens(self) -> int:
        return self.info.capacity_tokens

    def start_process(self, timeout: float = 600.0) -> EngineInfo:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=worker_main, args=(child, self.model, self.cfg, self.device),
                                 name="tenacia-engine", daemon=True)
        saved = {k: os.environ.get(k) for k in HUGE_PAGES_ENV}
        if self.cfg.huge_pages:
            os.environ.update(HUGE_PAGES_ENV)  # read by torch in the child before its first allocation
        try:
            self._proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        if not self._conn.poll(timeout):
            self._proc.kill()
            raise RuntimeError(f"the engine process did not start within {timeout:.0f} s")
        try:
            message = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the engine process died while loading (exit code {self._proc.exitcode})") from None
        if not isinstance(message, Ready):
            raise RuntimeError(f"the engine process failed to load the model: {message.reason}")
        self.info = message.info
        return self.info

    def start(self) -> None:
        """Watch the engine's pipe from the running event loop (call it there): its messages are
        read in the loop's thread, one wake-up a step for all requests (a reader thread took the
        GIL from the loop and woke it once a request: docs/benchmarks.md, 2026-12-05)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._on_readable)

    def _unwatch(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._conn.fileno())
            self._loop = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the engine process: ``Stop``, then wait (up to ``timeout``) for its ``Stopped``
        and its exit; kill it if it has not exited by then. In the loop's thread, once the
        requests have drained (what the engine still sends is dropped)."""
        if self._conn is None:
            return
        self._unwatch()
        deadline = time.monotonic() + timeout
        try:
            self._conn.send(Stop())
            while self._conn.poll(max(0.0, deadline - time.monotonic())):
                if isinstance(self._conn.recv(), Stopped):
                    break
        except (OSError, ValueError, EOFError):
            pass
        if self._proc is not None:
            self._proc.join(max(0.0, deadline - time.monotonic()))
            if self._proc.is_alive():
                self._proc.kill()

    def check(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise InvalidRequest unless the request could run alone on an idle engine."""
        check_request(prompt_ids, params, vocab=self.info.vocab_size, context=self.info.max_context,
                      capacity=self.info.capacity_tokens)

    def submit(self, prompts: list[list[int]], params: SamplingParams) -> RequestHandle:
        """Queue a request (after ``check``); EngineError once the engine process is gone."""
        for prompt in prompts:
            self.check(prompt, params)
        if self.dead is not None:
            raise EngineError(self.dead)
        handle = RequestHandle(self, f"req{next(self._ids)}", len(prompts), params.n)
        for p, part in enumerate(handle.parts):
            self._parts[part] = [handle, p * params.n, params.n]
        try:
            self._conn.send(Add(handle.parts, prompts, params))
        except (OSError, ValueError):  # the pipe broke: the pipe's watcher is failing everything
            for part in handle.parts:
                self._parts.pop(part, None)
            raise EngineError(self.dead or "the engine process exited") from None
        return handle

    def _cancel(self, handle: RequestHandle) -> None:
        """RequestHandle.cancel's way in."""
        for part in handle.parts:
            self._parts.pop(part, None)
        if self.dead is None:
            try:
                self._conn.send(Abort(handle.parts))
            except (OSError, ValueError):
                pass

    def _on_readable(self) -> None:
        """Every message waiting on the pipe (the loop calls it when the pipe is readable)."""
        try:
            while self._conn.poll(0):
                message = self._conn.recv()
                match message:
                    case StepFailed(parts=parts, reason=reason):
                        handles = {id(e[0]): e[0] for e in (self._parts.pop(p, None) for p in parts) if e}
                        for handle in handles.values():
                            handle._put(EngineError(reason))
                    case Deltas(deltas=deltas, metrics=events):
                        if self.metrics is not None:
                            for name, args in events:
                                getattr(self.metrics, name)(*args)
                        self._dispatch(deltas)
        except (EOFError, OSError):
            self._unwatch()
            self._proc.join(1.0)
            self.dead = f"the engine process exited (exit code {self._proc.exitcode}); restart the server"
            self._fail_all(EngineError(self.dead))

    def _dispatch(self, deltas: list[ChoiceDelta]) -> None:
        """Hand each delta to its request's handle. A failed choice (``error``) fails its whole
        request: the handle gets the error, and its end aborts the request's other choices."""
        by_handle: dict[int, tuple[RequestHandle, list[ChoiceDelta]]] = {}
        failed: dict[int, tuple[RequestHandle, str]] = {}
        for d in deltas:
            entry = self._parts.get(d.request_id)
            if entry is None:
                continue
            handle, offset, _ = entry
            if d.error is not None:
                failed[id(handle)] = (handle, d.error)
                continue
            d.index += offset
            if d.finish_reason is not None:
                entry[2] -= 1
                if entry[2] == 0:
                    del self._parts[d.request_id]
            by_handle.setdefault(id(handle), (handle, []))[1].append(d)
        for handle, _ in failed.values():
            for part in handle.parts:
                self._parts.pop(part, None)
        for key, (handle, items) in by_handle.items():
            if key not in failed:
                handle._put(items)
        for handle, why in failed.values():
            handle._put(EngineError(why))

    def _fail_all(self, error: EngineError) -> None:
        handles = {id(e[0]): e[0] for e in self._parts.values()}
        self._parts.clear()
        for handle in handles.values():
            handle._put(error)
