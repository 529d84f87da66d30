"""The listening socket and the HTTP stack: asyncio's loop and uvloop both turn Nagle's algorithm
off on the connections they accept (a response's second write would otherwise wait ~40 ms for the
client's delayed ACK on a kept-alive connection, every request and every streamed event);
``http_stack`` takes uvloop and httptools where installed and falls back, with a warning."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket

import pytest

from tenacia.serve import server
from tenacia.serve.server import bind, http_stack


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_accepted_connections_have_nagle_off(kind):
    loop = _new_loop(kind)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = await asyncio.start_server(on_connect, sock=sock)
        async with listener:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            while not seen:
                await asyncio.sleep(0.01)
            writer.close()

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 30))
    finally:
        loop.close()
    assert seen and seen[0] != 0


@pytest.mark.skipif(not (importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools")),
                    reason="uvloop or httptools not installed")
def test_http_stack_takes_uvloop_and_httptools_where_installed(caplog):
    with caplog.at_level(logging.WARNING, logger=server.__name__):
        assert http_stack() == ("uvloop", "httptools")
    assert not caplog.records


def test_http_stack_falls_back_to_asyncio_and_h11_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(server.importlib.util, "find_spec", lambda name: None)
    with caplog.at_level(logging.WARNING, logger=server.__name__):
        assert http_stack() == ("asyncio", "h11")
    assert "asyncio event loop and the h11 parser" in caplog.text
