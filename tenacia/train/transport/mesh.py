"""A group's connections: ``streams`` one-way TCP streams from every member to every other.

``listen(host)`` makes the socket a member publishes (its ``host:port``) before anyone connects
to it; ``Mesh.open`` then connects to every peer and accepts every peer's streams, in one
selector loop bounded by ``TransportConfig.timeout_s``. Each stream starts with a ``HELLO`` frame
naming its sender and index and carrying the member list, so a stream from a member of another
group is refused at once. A mesh serves one group for as many rounds as it lives; after any
``TransportError`` it is closed (every socket, so the peers' calls fail fast too) and a new
group opens a new mesh.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time

import torch

from ..config import TransportConfig
from .collectives import allgather, allreduce_sum, alltoall
from .frames import HELLO, Header, TransportError, header_size, unpack


def listen(host: str, port: int = 0, window_bytes: int = 0) -> socket.socket:
    """A listening TCP socket on ``host`` (port 0: any free one); accepted streams inherit its
    buffers (``window_bytes``, 0: autotuning)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _buffers(sock, window_bytes)
    sock.bind((host, port))
    sock.listen(256)
    return sock


def _buffers(sock: socket.socket, window_bytes: int) -> None:
    if window_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, window_bytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window_bytes)


class Mesh:
    def __init__(self, rank: int, members: tuple[int, ...], config: TransportConfig,
                 inbound: dict[int, list[socket.socket]], outbound: dict[int, list[socket.socket]]):
        self.rank, self.members, self.config = rank, members, config
        self.inbound, self.outbound = inbound, outbound
        self.closed = False

    @classmethod
    def open(cls, rank: int, addresses: list[str], listener: socket.socket, members: list[int],
             config: TransportConfig | None = None) -> Mesh:
        """Connect member ``members[rank]`` to every other member (``addresses[k]``: member k's
        listener, ``host:port``) and accept their streams on ``listener``."""
        config = config or TransportConfig()
        members_t = tuple(members)
        if len(addresses) != len(members_t) or not 0 <= rank < len(members_t):
            raise ValueError(f"rank {rank} of {len(members_t)} members with {len(addresses)} addresses")
        deadline = time.monotonic() + config.timeout_s
        peers = [k for k in range(len(members_t)) if k != rank]
        outbound: dict[int, list[socket.socket]] = {}
        pending: dict[socket.socket, bytes] = {}  # connecting stream -> its hello
        sel = selectors.DefaultSelector()
        try:
            for k in peers:
                host, port = addresses[k].rsplit(":", 1)
                outbound[k] = []
                for s in range(config.streams):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    _buffers(sock, config.window_bytes)
                    sock.setblocking(False)
                    outbound[k].append(sock)
                    if sock.connect_ex((host, int(port))) not in (0, errno.EINPROGRESS):
                        raise TransportError(f"cannot connect to member {members_t[k]} at {addresses[k]}")
                    pending[sock] = Header(HELLO, rank, 0, s, 0, 0, members_t).pack()
                    sel.register(sock, selectors.EVENT_WRITE)
            inbound = _accept(sel, listener, pending, members_t, len(peers) * config.streams, deadline)
        except BaseException:
            for socks in outbound.values():
                for sock in socks:
                    sock.close()
            raise
        finally:
            sel.close()
        return cls(rank, members_t, config, inbound, outbound)

    def allreduce_sum(self, tensor: torch.Tensor, round_id: int) -> torch.Tensor:
        """The sum over the group of every member's ``tensor`` (same shape and dtype everywhere),
        bit-identical on every member (``collectives.allreduce_sum``)."""
        return self._call(allreduce_sum, tensor, round_id)

    def allgather(self, data: bytes, round_id: int) -> list[bytes]:
        """Every member's ``data``, in rank order (sizes may differ)."""
        return self._call(allgather, data, round_id)

    def alltoall(self, parts: list[bytes], round_id: int) -> list[bytes]:
        """``parts[k]`` to member k; what every member sent to this one, in rank order (sizes may differ)."""
        return self._call(alltoall, parts, round_id)

    def _call(self, fn, payload, round_id: int):
        if self.closed:
            raise TransportError("this mesh was closed (after an error, or by close()); open a new one")
        try:
            return fn(self, payload, round_id, time.monotonic() + self.config.timeout_s)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close every stream: peers in a call with this member see it end at once, and so does a
        call of this mesh in progress on another thread (each stream is shut down before it is
        closed, which wakes a selector waiting on it: the call raises ``TransportError``)."""
        self.closed = True
        for group in (self.inbound, self.outbound):
            for socks in group.values():
                for sock in socks:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:  # not connected, or closed already
                        pass
                    sock.close()


def _accept(sel: selectors.BaseSelector, listener: socket.socket, pending: dict[socket.socket, bytes],
            members: tuple[int, ...], expected: int, deadline: float) -> dict[int, list[socket.socket]]:
    """Finish the outgoing connects (send each hello) and accept ``expected`` streams (read each
    hello) in one loop; the inbound streams by sender rank, in stream order."""
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    partial: dict[socket.socket, bytes] = {}  # accepted stream -> hello bytes so far
    got: dict[int, dict[int, socket.socket]] = {}
    try:
        _serve(sel, listener, pending, members, expected, deadline, partial, got)
    except BaseException:
        for sock in [*partial, *(s for streams in got.values() for s in streams.values())]:
            sock.close()
        raise
    finally:
        sel.unregister(listener)
    return {sender: [streams[s] for s in sorted(streams)] for sender, streams in got.items()}


def _serve(sel: selectors.BaseSelector, listener: socket.socket, pending: dict[socket.socket, bytes],
           members: tuple[int, ...], expected: int, deadline: float, partial: dict[socket.socket, bytes],
           got: dict[int, dict[int, socket.socket]]) -> None:
    hello = header_size(len(members))
    accepted = 0
    while pending or accepted < expected or partial:
        wait = deadline - time.monotonic()
        if wait <= 0:
            raise TransportError(f"the mesh of {list(members)} did not connect in time "
                                 f"({accepted} of {expected} streams accepted)")
        for key, _ in sel.select(wait):
            sock = key.fileobj
            if sock is listener:
                conn, _ = listener.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                partial[conn] = b""
                sel.register(conn, selectors.EVENT_READ)
                accepted += 1
            elif sock in pending:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise TransportError(f"connecting a stream failed: {errno.errorcode.get(err, err)}")
                sock.sendall(pending.pop(sock))  # a hello fits any socket buffer
                sel.unregister(sock)
            else:
                chunk = sock.recv(hello - len(partial[sock]))
                if not chunk:
                    raise TransportError("a stream closed before its hello")
                partial[sock] += chunk
                if len(partial[sock]) == hello:
                    h = unpack(partial.pop(sock))
                    sel.unregister(sock)
                    if h.kind != HELLO or h.members != members:
                        raise TransportError(f"a stream from a member of group {list(h.members)} "
                                             f"reached group {list(members)}")
                    got.setdefault(h.sender, {})[h.offset] = sock
