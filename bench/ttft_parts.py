"""Where a streamed request's time to first token goes, stage by stage, through `tenacia serve`
(SmolLM2-135M float32, bench/serve.py's 100-token chat prompts, greedy, EOS ignored); and, with
``--concurrency`` above 1, where the engine loop's time goes between decode steps.

    .venv/bin/python bench/ttft_parts.py --isa avx512 --requests 18     # TTFT at 1 stream, by stage
    .venv/bin/python bench/ttft_parts.py --isa avx512 --concurrency 16  # the engine loop at 16

The server runs in a process of this script that wraps a few of tenacia's functions to note the
time (CLOCK_MONOTONIC, one clock for every process) when a request passes each stage; its engine
process wraps the engine's. Each note is a line appended to a file: tens of microseconds, and
none inside the forward. One request at a time, 0.3 s apart, 4 output tokens; the first two
warm the path and are not counted. Stages, in order:

  client_send -> asgi_entry      the openai client builds and sends the request; uvicorn parses it
  asgi_entry -> chat_start       routing, the body read and validated (``ChatRequest``)
  chat_start -> render_chat_end  tools checked, the chat template rendered
  render_chat_end -> encode_end  tokenized
  encode_end -> submit_start     sampling parameters, limits
  submit_start -> submit_end     ``ProcessEngine.submit``: checks, the ``Add`` message on the pipe
  submit_end -> engine_add       the engine process reads it (negative: it was read first)
  engine_add -> run_start        the engine loop and the scheduler
  run_start -> run_end           ``ModelRunner.run``: the prefill's forward and the sampling
  run_end -> step_end            detokenize, the deltas
  step_end -> reader_got_deltas  the ``Deltas`` message back to the server's reader thread
  reader_got_deltas -> sse_yield the event loop takes it, the event stream yields the chunk
  sse_yield -> client_first      uvicorn writes it; the client reads and parses it

Every garbage collection of the two server processes is noted too (generation, milliseconds,
whether it began inside a counted TTFT).

With ``--concurrency N`` (N > 1), two bursts of N requests of 64 tokens run at once and the
engine process's loop is timed between its steps (step, the ``Deltas`` sent, the messages read).
Prints the medians and writes bench/results/ttft-parts-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

LOG_ENV = "TTFT_PARTS_LOG"
STAGES = ["client_send", "asgi_entry", "chat_start", "render_chat_end", "encode_end", "submit_start", "submit_end",
          "engine_add", "run_start", "run_end", "step_end", "reader_got_deltas", "sse_yield", "client_first"]
LOOP = ["worker_step_start", "run_start", "run_end", "step_end", "worker_step_end", "receive_start", "receive_end"]


def mark(what: str) -> None:
    with open(os.environ[LOG_ENV], "a") as f:
        f.write(json.dumps([what, time.monotonic()]) + "\n")


def note_collections(process: str) -> None:
    """Note every garbage collection of this process: (``gc``, process, generation, start, ms)."""
    import gc

    started: list[float] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.monotonic()]
        elif started:
            with open(os.environ[LOG_ENV], "a") as f:
                f.write(json.dumps(["gc", started[0], process, info["generation"],
                                    (time.monotonic() - started[0]) * 1e3]) + "\n")

    gc.callbacks.append(callback)


def timed(owner, name: str, before: str | None, after: str | None) -> None:
    """Wrap ``owner.name`` (a function or coroutine function) to note ``before`` and ``after``."""
    fn = getattr(owner, name)

    def note(what: str | None) -> None:
        if what is not None:
            mark(what)

    if asyncio.iscoroutinefunction(fn):
        async def wrapped(*a, **k):
            note(before)
            out = await fn(*a, **k)
            note(after)
            return out
    else:
        def wrapped(*a, **k):
            note(before)
            out = fn(*a, **k)
            note(after)
            return out
    setattr(owner, name, wrapped)


def engine_worker(*args) -> None:
    """The engine process: the engine's stages wrapped, then tenacia's own ``worker_main``."""
    from tenacia.serve.engine import llm_engine, process_engine, runner

    note_collections("engine")
    timed(llm_engine.LLMEngine, "add_request", "engine_add", None)
    timed(llm_engine.LLMEngine, "step", None, "step_end")
    timed(runner.ModelRunner, "run", "run_start", "run_end")
    timed(process_engine.EngineWorker, "step", "worker_step_start", "worker_step_end")
    timed(process_engine.EngineWorker, "receive", "receive_start", "receive_end")
    process_engine.worker_main(*args)


def serve(port: int, threads: int) -> int:
    """The HTTP server with its stages wrapped (``engine_worker`` for its engine process)."""
    from tenacia.cli import main as tenacia_main
    from tenacia.serve import api, server
    from tenacia.serve.engine import process_engine

    process_engine.worker_main = engine_worker
    note_collections("http")
    timed(api._Api, "chat", "chat_start", None)
    timed(api._Api, "render_chat", None, "render_chat_end")
    timed(api._Api, "encode", None, "encode_end")
    timed(process_engine.ProcessEngine, "submit", "submit_start", "submit_end")
    timed(process_engine.ProcessEngine, "_dispatch", "reader_got_deltas", None)
    stream = api._Api._stream

    async def noted_stream(self, *a, **k):
        async for chunk in stream(self, *a, **k):
            mark("sse_yield")
            yield chunk

    api._Api._stream = noted_stream
    make_app = server.create_app

    def noted_app(*a, **k):
        app = make_app(*a, **k)

        async def entry(scope, receive, send):
            if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
                mark("asgi_entry")
            return await app(scope, receive, send)

        return entry

    server.create_app = noted_app
    return tenacia_main(["serve", "smollm2", "--port", str(port), "--threads", str(threads), "--no-prefix-caching"])


async def one_at_a_time(url: str, prompts: list, n: int) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600) as client:
        for i in range(n):
            await asyncio.sleep(0.3)
            mark("client_send")
            first = False
            stream = await client.chat.completions.create(
                model="smollm2-135m-instruct", messages=prompts[i % len(prompts)], max_tokens=4, temperature=0.0,
                stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content and not first:
                    first = True
                    mark("client_first")


async def bursts(url: str, prompts: list, concurrency: int) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600) as client:
        async def one(messages) -> None:
            stream = await client.chat.completions.create(
                model="smollm2-135m-instruct", messages=messages, max_tokens=64, temperature=0.0,
                stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            async for _ in stream:
                pass

        for _ in range(2):  # the first warms the path
            mark("burst_start")
            await asyncio.gather(*(one(prompts[i % len(prompts)]) for i in range(concurrency)))


def stage_times(events: list) -> dict[str, list[float]]:
    """Each stage's milliseconds, request by request (the first two left out)."""
    requests: list[dict[str, float]] = []
    for what, t in events:
        if what == "client_send":
            requests.append({"client_send": t})
        elif requests and what in STAGES and what not in requests[-1]:
            requests[-1][what] = t
    out: dict[str, list[float]] = {}
    for r in requests[2:]:
        for a, b in zip(STAGES, STAGES[1:], strict=False):
            out.setdefault(f"{a} -> {b}", []).append(round((r[b] - r[a]) * 1e3, 3))
        out.setdefault("ttft", []).append(round((r["client_first"] - r["client_send"]) * 1e3, 3))
    return out


def loop_times(events: list) -> dict[str, list[float]]:
    """The engine loop's spans (ms) from the last burst's start: each note to the next in ``LOOP``."""
    start = max(t for what, t in events if what == "burst_start")
    out: dict[str, list[float]] = {}
    last: dict[str, float] = {}
    for what, t in events:
        if t < start or what not in LOOP:
            continue
        prev = LOOP[LOOP.index(what) - 1]
        if prev in last:
            out.setdefault(f"{prev} -> {what}", []).append(round((t - last[prev]) * 1e3, 3))
        last[what] = t
    return out


def collections_seen(notes: list) -> dict[str, dict]:
    """Garbage collections per process and generation from the first request on (not the start's):
    how many, their milliseconds, and how many began inside a counted request's TTFT (client_send
    .. client_first, the first two left out)."""
    begin = min((t for what, t, *_ in notes if what in ("client_send", "burst_start")), default=0.0)
    sends = [t for what, t, *_ in notes if what == "client_send"][2:]
    firsts = [t for what, t, *_ in notes if what == "client_first"][2:]
    windows = list(zip(sends, firsts, strict=False))
    out: dict[str, dict] = {}
    for _, start, process, generation, ms in (n for n in notes if n[0] == "gc" and n[1] >= begin):
        entry = out.setdefault(f"{process} gen {generation}", {"count": 0, "ms": 0.0, "largest_ms": 0.0, "in_ttft": 0})
        entry["count"] += 1
        entry["ms"] = round(entry["ms"] + ms, 3)
        entry["largest_ms"] = round(max(entry["largest_ms"], ms), 3)
        entry["in_ttft"] += any(a <= start <= b for a, b in windows)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--isa", default=None, help="TENACIA_ISA for the server (default: the engine's choice)")
    p.add_argument("--requests", type=int, default=18, help="one at a time (the first two not counted)")
    p.add_argument("--concurrency", type=int, default=1, help="above 1: time the engine loop in bursts")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)  # this script's own server process
    args = p.parse_args()
    if args.serve_port:
        return serve(args.serve_port, args.threads)

    from results_file import write_results
    from serve import make_prompts
    from serve_servers import free_port

    from tenacia.data.smollm2 import smollm2_dir

    prompts = make_prompts(smollm2_dir(), 16, 100)
    log = Path(tempfile.mkstemp(prefix="ttft-parts-", suffix=".jsonl")[1])
    os.environ[LOG_ENV] = str(log)
    env = {**os.environ, "PYTHONPATH": str(ROOT)} | ({"TENACIA_ISA": args.isa} if args.isa else {})
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve-port", str(port), "--threads", str(args.threads)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in server.stdout:
            if "listening on" in line:
                print(line.strip()[:400], flush=True)
                break
        url = f"http://127.0.0.1:{port}"
        if args.concurrency > 1:
            asyncio.run(bursts(url, prompts, args.concurrency))
        else:
            asyncio.run(one_at_a_time(url, prompts, args.requests))
    finally:
        server.terminate()
        server.wait(60)
    notes = sorted((tuple(json.loads(line)) for line in log.read_text().splitlines()), key=lambda e: e[1])
    log.unlink()
    events = [e for e in notes if e[0] != "gc"]
    spans = loop_times(events) if args.concurrency > 1 else stage_times(events)
    medians = {k: round(statistics.median(v), 3) for k, v in spans.items()}
    for k, v in spans.items():
        print(f"{k:34s} median {medians[k]:8.3f} ms   max {max(v):8.3f}   n {len(v)}")
    gcs = collections_seen(notes)
    for k, v in gcs.items():
        print(f"gc {k:31s} {v['count']:4d} collections, {v['ms']:8.3f} ms in all, largest {v['largest_ms']:.3f}"
              f", {v['in_ttft']} inside a counted TTFT")
    path = write_results("ttft-parts", {"setup": vars(args), "medians_ms": medians, "each_ms": spans,
                                        "collections": gcs})
    print(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
