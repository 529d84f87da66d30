"""Framing for the replicas' control and healing channels: length-prefixed messages over TCP.

A message (``protocol.py``: typed, converted by ``protocol.encode``/``decode`` here and nowhere
else) is a JSON header, optionally followed by binary blobs:
``[u32 header length][header JSON][u64 blob length][blob bytes]...`` where the header's ``"blobs"``
field says how many blobs follow. Sends on one connection are serialised by a lock, so a
heartbeat thread and the training thread can share it. A peer that goes away (crash, reset,
closed socket) makes ``recv`` raise ``ConnectionError``: the kernel reports a killed process's
socket closed at once, which is how crashes are detected in milliseconds. A header that is not a
valid message makes ``recv`` raise ``ConnectionError`` too, naming what is wrong: the connection is
dropped like a broken one.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import threading
from collections.abc import Callable

from .protocol import Message, ProtocolError, decode, encode

_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
MAX_HEADER = 16 << 20


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class Conn:
    """One TCP connection carrying messages both ways."""

    def __init__(self, sock: socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._send_lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, addr: str, timeout: float) -> Conn:
        """Connect; ``timeout`` also bounds every send and receive until ``settimeout(None)``
        (a stopped process's kernel still accepts connections, then never answers)."""
        return cls(socket.create_connection(parse_addr(addr), timeout=timeout))

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def set_kernel_timeout(self, seconds: int) -> None:
        """Block in the kernel (no Python-side polling), but fail a send or receive that makes no
        progress for ``seconds`` (``SO_SNDTIMEO``/``SO_RCVTIMEO``): a stopped peer cannot hang us."""
        self.sock.settimeout(None)
        tv = struct.pack("ll", seconds, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)

    def send(self, msg: Message, *blobs: bytes | memoryview) -> None:
        data = json.dumps(dict(encode(msg), blobs=len(blobs))).encode()
        with self._send_lock:
            self.sock.sendall(_U32.pack(len(data)) + data)
            for blob in blobs:
                self.sock.sendall(_U64.pack(len(blob)))
                self.sock.sendall(blob)

    def has_unread(self) -> bool:
        """The peer's bytes (or its close) wait in the kernel, not read yet: the peer has spoken,
        whether or not a reader thread got the CPU to take them."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):  # closed meanwhile
            return False
        return bool(readable)

    def try_send(self, msg: Message) -> bool:
        """Send, swallowing a broken connection (the reader side reports it)."""
        try:
            self.send(msg)
            return True
        except OSError:
            return False

    def _recv_exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        # A blocking socket waits in the kernel for all n bytes: one system call and one GIL hand-off
        # for a large blob, where a socket with a timeout polls and wakes Python per arriving chunk.
        flags = socket.MSG_WAITALL if self.sock.gettimeout() is None else 0
        while got < n:
            k = self.sock.recv_into(view[got:], n - got, flags)
            if k == 0:
                raise ConnectionError("peer closed the connection")
            got += k
        return buf

    def recv(self) -> tuple[Message, list[bytearray]]:
        try:
            (n,) = _U32.unpack(self._recv_exact(4))
            if n > MAX_HEADER:
                raise ConnectionError(f"message header of {n} bytes is too large")
            header = json.loads(self._recv_exact(n))
            count = header.pop("blobs", 0) if isinstance(header, dict) else 0
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ProtocolError(f"blob count {count!r} is not an integer >= 0")
            blobs = []
            for _ in range(count):
                (size,) = _U64.unpack(self._recv_exact(8))
                blobs.append(self._recv_exact(size))
            msg = decode(header)
        except (ProtocolError, ValueError) as e:  # ValueError: a header that is not JSON
            raise ConnectionError(f"malformed message: {e}") from e
        except OSError as e:
            raise ConnectionError(str(e)) from e
        return msg, blobs

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def listen(host: str) -> socket.socket:
    """A listening socket on ``host`` and a port the kernel picks (port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(64)
    return sock


def serve_forever(sock: socket.socket, handle: Callable[[Conn], None], name: str) -> None:
    """Accept connections on ``sock`` in a daemon thread, each handled in a thread of its own."""

    def accept() -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(Conn(client),), daemon=True).start()

    threading.Thread(target=accept, name=name, daemon=True).start()


def sock_addr(sock: socket.socket, advertise: str) -> str:
    return f"{advertise}:{sock.getsockname()[1]}"
