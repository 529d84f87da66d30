"""Start a server: the engine process loads the model on the detected device; this process binds
the socket and runs uvicorn.

Contract:
- The socket is bound first (with port 0 the OS picks a free port), then the engine process
  loads the model; once it is ready, one line, ``tenacia serve: listening on http://HOST:PORT
  (model NAME, ...)``, is printed and flushed, so scripts and tests can read the port.
- SIGTERM or SIGINT drains: the socket stops accepting, requests in flight run to their end (at
  most ``drain_timeout_s``), then the engine process stops and this one exits 0.
- If the engine process cannot load the model, ``EngineStartError`` says why; nothing is left
  running.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import socket
from collections.abc import Callable

import torch

from .api import create_app
from .config import ServeConfig
from .engine.process_engine import ProcessEngine
from .heap import freeze_start_objects
from .metrics import ServeMetrics
from .models import load_model

log = logging.getLogger(__name__)


class EngineStartError(RuntimeError):
    """The engine process could not load the model (the message says why)."""


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # connections whose socket says it is TCP, and accepted sockets copy the listener's protocol.
    # With Nagle on, a response's second write (uvicorn writes the headers, then the body; a stream
    # writes an event a token) waits for the client's delayed ACK: ~40 ms per request on a
    # kept-alive connection, ~45 ms measured per /tokenize on the tiny server before this.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def http_stack() -> tuple[str, str]:
    """uvicorn's event loop and HTTP parser: ``("uvloop", "httptools")`` where both are installed
    (dependencies of tenacia; they take about a fifth off the HTTP process's CPU at 16 streams,
    docs/benchmarks.md, "Serving on AMD Zen 4", 2026-12-04 17:44), else asyncio's loop and h11's
    parser for the one missing, said in one logged warning; the server runs either way."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if (loop, http) != ("uvloop", "httptools"):
        log.warning("HTTP with the %s event loop and the %s parser (uvloop or httptools not installed; "
                    "pip install uvloop httptools for less CPU a request)", loop, http)
    return loop, http


def usage_examples(base_url: str, model: str, api_key: str | None = None) -> str:
    """A curl and an ``openai`` client call against this server, ready to paste."""
    auth = f" -H 'Authorization: Bearer {api_key}'" if api_key else ""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64})
    return (
        f"  chat page:  {base_url}/\n"
        f"  curl:       curl -s {base_url}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
        f"-d '{body}'\n"
        f"  python:     from openai import OpenAI\n"
        f"              client = OpenAI(base_url='{base_url}/v1', api_key='{api_key or 'none'}')\n"
        f"              r = client.chat.completions.create(model='{model}', "
        f"messages=[{{'role': 'user', 'content': 'Hello!'}}], max_tokens=64)\n"
        f"              print(r.choices[0].message.content)"
    )


def serve(root: ServeConfig, *, announce: Callable[[str], None] | None = None) -> int:
    """Serve ``root.model`` until SIGTERM/SIGINT (see module contract). Returns the exit code."""
    import uvicorn

    model, cfg, log_level = root.model, root.server, root.server.log_level
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The HTTP side needs the tokenizer, the template and the config; the engine process loads
    # the weights onto the device.
    served = load_model(model, torch.device("cpu"), torch.float32, weights=False)
    if cfg.model_name:
        served.name = cfg.model_name
    metrics = ServeMetrics(served.name)
    sock = bind(cfg.host, cfg.port)
    engine = ProcessEngine(model, root.engine, root.device, metrics)
    try:
        info = engine.start_process()
    except RuntimeError as e:
        sock.close()
        engine.stop()
        raise EngineStartError(str(e)) from None
    app = create_app(served, engine, cfg, metrics)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    say = announce or (lambda line: print(line, flush=True))
    say(f"tenacia serve: listening on {base} (model {served.name} from {served.source}; "
        f"{info.device}, {info.dtype}; "
        f"KV cache {engine.capacity_tokens} tokens ({info.kv_bytes_per_token} bytes a token)"
        + (f"; {info.huge_page_bytes >> 20} MiB on huge pages" if info.huge_page_bytes else "")
        + (f"; decode kernels {info.decode_kernels}" if info.decode_kernels else "")
        + (f"; products {info.products}" if info.products else "") + ")")
    say(usage_examples(base, served.name, cfg.api_keys[0] if cfg.api_keys else None))
    loop, http = http_stack()
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=False, loop=loop, http=http,
                            timeout_graceful_shutdown=cfg.drain_timeout_s or None)
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handlers it found; ours
    # only records it, so that a drained shutdown exits 0 instead of dying by the signal.
    freeze_start_objects()
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _f: caught.append(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say(f"tenacia serve: stopped{' after a signal' if caught else ''}")
    return 0
