"""The listening socket: asyncio turns Nagle's algorithm off on the connections it accepts (a
response's second write would otherwise wait ~40 ms for the client's delayed ACK on a kept-alive
connection, every request and every streamed event)."""

from __future__ import annotations

import asyncio
import socket

from tenacia.serve.server import bind


def test_accepted_connections_have_nagle_off():
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            while not seen:
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert seen and seen[0] != 0
