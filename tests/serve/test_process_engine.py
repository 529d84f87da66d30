"""The engine process's failure paths: a step that raises fails only the requests it ran and the
engine serves on; a refused request fails alone; an engine process that dies fails every request
in flight, every later one with 503, and /health says so; an engine process still loading ends
when its server is killed."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tenacia.process import alive
from tenacia.serve.config import EngineConfig
from tenacia.serve.engine.llm_engine import ChoiceDelta, LLMEngine
from tenacia.serve.engine.messages import Add, Deltas, StepFailed, Stop, Stopped
from tenacia.serve.engine.process_engine import (
    EngineError,
    EngineWorker,
    ProcessEngine,
    Recorder,
    RequestHandle,
)
from tenacia.serve.engine.sequence import SamplingParams

from .tiny import ServerProcess

GREEDY = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)


def drain(worker: EngineWorker, conn) -> list:
    """Run the worker until it is idle; every message it sent, in order."""
    got = []
    worker.receive()
    while worker.engine.has_work():
        worker.step()
        worker.receive()
    while conn.poll(0.2):
        got.append(conn.recv())
    return got


def test_a_step_that_raises_fails_its_requests_and_the_engine_serves_on(model, tokenizer, monkeypatch):
    import torch

    engine = LLMEngine(model, tokenizer, eos_ids={2}, cfg=EngineConfig(decode_kernels=False),
                       device=torch.device("cpu"))
    server, worker_end = mp.Pipe()
    worker = EngineWorker(engine, worker_end, Recorder())
    real_step = engine.step
    monkeypatch.setattr(engine, "step", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    server.send(Add(["a-0", "a-1"], [tokenizer.encode("def").ids, tokenizer.encode("class").ids], GREEDY))
    got = drain(worker, server)
    assert [type(m) for m in got] == [StepFailed] and got[0].parts == ["a-0", "a-1"]
    assert "boom" in got[0].reason and not engine.has_work()

    monkeypatch.setattr(engine, "step", real_step)
    server.send(Add(["b-0"], [tokenizer.encode("import").ids], GREEDY))
    got = drain(worker, server)
    deltas = [d for m in got if isinstance(m, Deltas) for d in m.deltas]
    assert all(isinstance(m, Deltas) for m in got)
    assert sum(len(d.token_ids) for d in deltas) == 4 and deltas[-1].finish_reason == "length"

    too_long = SamplingParams(max_tokens=10**6, temperature=0.0)  # refused by the engine's check
    server.send(Add(["c-0"], [tokenizer.encode("x").ids], too_long))
    got = drain(worker, server)
    assert [type(m) for m in got] == [StepFailed] and got[0].parts == ["c-0"]
    server.send(Stop())
    assert worker.receive() is False and isinstance(server.recv(), Stopped)


class _Exited:
    """Stands for an engine process that has exited."""

    exitcode = -9

    def join(self, timeout=None) -> None:
        pass


@pytest.mark.timeout(30)
def test_the_event_loop_reads_the_pipe_then_fails_every_request_when_it_closes():
    """One message for many requests is read in the loop's thread and handed to each; its metrics
    are replayed; a StepFailed fails its requests; a closed pipe fails the rest and stops the watch."""
    async def main() -> None:
        replayed = Recorder()
        engine = ProcessEngine("unused", EngineConfig(), metrics=replayed)
        engine._conn, worker = mp.Pipe()
        engine._proc = _Exited()
        a, b, c = (RequestHandle(engine, f"req{i}", 1, 1) for i in range(3))
        engine._parts = {"req0-0": [a, 0, 1], "req1-0": [b, 0, 1], "req2-0": [c, 0, 1]}
        engine.start()
        worker.send(Deltas([ChoiceDelta("req0-0", 0, "x", [5], [], None, 3, 1),
                            ChoiceDelta("req1-0", 0, "y", [6], [], "length", 3, 1)], [("decode_step", (0.02, 2))]))
        got_a, got_b = [await asyncio.wait_for(h.queue.get(), 5) for h in (a, b)]
        assert [d.text for d in got_a] == ["x"] and [d.finish_reason for d in got_b] == ["length"]
        assert replayed.drain() == [("decode_step", (0.02, 2))] and "req1-0" not in engine._parts
        worker.send(StepFailed(["req2-0"], "the engine failed during a step: boom"))
        assert "boom" in str(await asyncio.wait_for(c.queue.get(), 5))
        worker.close()
        lost = await asyncio.wait_for(a.queue.get(), 5)
        assert isinstance(lost, EngineError) and "exit code -9" in str(lost) and engine.dead is not None
        assert engine._loop is None and engine._parts == {}

    asyncio.run(main())


def _engine_pid(server_pid: int) -> int:
    """The spawned engine process among the server's children (not multiprocessing's tracker)."""
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    raise AssertionError("no engine process found")


@pytest.mark.timeout(120)
def test_a_dead_engine_process_fails_requests_in_flight_then_503(tiny_dir):
    with ServerProcess(tiny_dir, "--name", "tiny") as server:
        body = {"model": "tiny", "prompt": "def", "max_tokens": 3000, "stream": True, "temperature": 0.0,
                "ignore_eos": True}
        with httpx.Client(base_url=server.url, timeout=60) as http:
            with http.stream("POST", "/v1/completions", json=body) as stream:
                lines = stream.iter_lines()
                assert next(lines).startswith("data: ")  # generating
                os.kill(_engine_pid(server.proc.pid), signal.SIGKILL)
                rest = [line for line in lines if line]
            assert any("engine process exited" in line for line in rest), rest[-3:]
            health = http.get("/health")
            assert health.status_code == 503 and "exited" in health.json()["error"]
            after = http.post("/v1/completions", json={**body, "stream": False, "max_tokens": 2})
            assert after.status_code == 503 and after.json()["error"]["code"] == "engine_unavailable"


# A parent that forks a child as busy as a loading engine (no pipe read, SIGTERM ignored), which
# watches it until ``loaded`` is set; the parent prints the child's pid and waits.
LOADING = """
import os, signal, sys, threading, time
from tenacia.serve.engine.process_engine import exit_with_parent
loaded = threading.Event()
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    exit_with_parent(os.getppid(), loaded, every_s=0.05)
    if sys.argv[1] == "loaded":
        loaded.set()
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("state", ["loading", "loaded"])
def test_an_engine_process_still_loading_ends_when_its_server_is_killed(state):
    parent = subprocess.Popen([sys.executable, "-c", LOADING, state], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    child = int(parent.stdout.readline())
    try:
        time.sleep(0.3)  # the watch is running (or, loaded, has stopped)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        # loaded, the watch is off: the child lives on (a loaded engine ends on its closed pipe)
        assert alive(child) == (state == "loaded")
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
