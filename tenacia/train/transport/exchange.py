"""One collective call's traffic over a mesh's streams, driven by one selector loop.

The caller queues what it sends (``send``: a payload split evenly across the peer's streams, one
frame per stream, possibly empty) and says what it expects on each inbound stream (``expect``:
the kinds of frames, in order, and where each payload goes), then ``run``s the loop until every
expected frame has arrived and every queued byte has left. ``on_frame`` is called after each
whole frame; it may queue more sends (the all-gather after the reduce-scatter).

Contract:
- A stream is read only while a frame of this call is expected on it, and never past that
  frame's last byte: a faster peer's frames of the next round wait in the kernel for the next call.
- A frame of another kind, round or member list than expected, an end of stream, a socket error
  or the deadline raises ``TransportError`` naming the peer and the round.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections import deque
from collections.abc import Callable

from .frames import KIND_NAMES, Header, TransportError, header_size, unpack

RECV_MAX = 1 << 20  # bytes asked of one recv_into


class _Inbound:
    def __init__(self, sock: socket.socket, peer: int, members: int):
        self.sock, self.peer = sock, peer
        self.kinds: deque[int] = deque()
        self.head = bytearray(header_size(members))
        self.header: Header | None = None  # set while reading a payload
        self.view = memoryview(self.head)
        self.got = 0


class Exchange:
    def __init__(self, rank: int, members: tuple[int, ...], round_id: int, deadline: float,
                 inbound: dict[int, list[socket.socket]], outbound: dict[int, list[socket.socket]]):
        self.rank, self.members, self.round, self.deadline = rank, members, round_id, deadline
        self.inbound = {p: [_Inbound(s, p, len(members)) for s in socks] for p, socks in inbound.items()}
        self.outbound = outbound
        self.peer_of = {sock: peer for peer, socks in outbound.items() for sock in socks}
        self.queues: dict[socket.socket, deque[memoryview]] = {}
        self.targets: Callable[[Header], memoryview] | None = None
        self.on_frame: Callable[[Header], None] = lambda h: None
        self.selector = selectors.DefaultSelector()
        self.events: dict[socket.socket, int] = {}

    # ----- what to send and expect ---------------------------------------------------------------
    def send(self, peer: int, kind: int, payload: memoryview, total: int = 0) -> None:
        """Queue ``payload`` to ``peer``: slice s of an even split on stream s, one frame each."""
        socks = self.outbound[peer]
        n, s = len(payload), len(socks)
        for i, sock in enumerate(socks):
            lo, hi = n * i // s, n * (i + 1) // s
            head = Header(kind, self.rank, self.round, lo, hi - lo, total or n, self.members).pack()
            self.queues.setdefault(sock, deque()).extend((memoryview(head), payload[lo:hi]))
            self._want(sock, selectors.EVENT_WRITE)

    def expect(self, peer: int, kinds: list[int]) -> None:
        """Frames of ``kinds``, in this order, on each of ``peer``'s streams."""
        for inbound in self.inbound[peer]:
            inbound.kinds.extend(kinds)
            self._want(inbound.sock, selectors.EVENT_READ)

    # ----- the loop ------------------------------------------------------------------------------
    def run(self, targets: Callable[[Header], memoryview], on_frame: Callable[[Header], None]) -> None:
        """Move bytes until nothing is expected or queued; ``targets(header)`` is where a frame's
        payload goes (a writable view of exactly ``header.length`` bytes)."""
        self.targets, self.on_frame = targets, on_frame
        by_sock = {i.sock: i for streams in self.inbound.values() for i in streams}
        try:
            while self.events:
                wait = self.deadline - time.monotonic()
                if wait <= 0:
                    raise TransportError(f"round {self.round}: peers {self._waiting()} did not complete it in time")
                for key, _ in self.selector.select(wait):
                    sock = key.fileobj
                    if sock in by_sock:
                        self._read(by_sock[sock])
                    else:
                        self._write(sock)
        finally:
            self.selector.close()

    def _waiting(self) -> list[int]:
        return sorted({self.members[i.peer] for streams in self.inbound.values() for i in streams if i.kinds})

    def _want(self, sock: socket.socket, event: int) -> None:
        if sock not in self.events:
            self.selector.register(sock, event)
            self.events[sock] = event

    def _done(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        del self.events[sock]

    def _write(self, sock: socket.socket) -> None:
        queue = self.queues[sock]
        try:
            while queue:
                sent = sock.send(queue[0])
                if sent < len(queue[0]):
                    queue[0] = queue[0][sent:]
                    return
                queue.popleft()
        except BlockingIOError:
            return
        except OSError as e:
            raise TransportError(f"round {self.round}: sending to member {self.members[self.peer_of[sock]]} "
                                 f"failed: {e}") from None
        self._done(sock)

    def _read(self, inbound: _Inbound) -> None:
        want = len(inbound.view) - inbound.got
        try:
            n = inbound.sock.recv_into(inbound.view[inbound.got:], min(want, RECV_MAX)) if want else 0
        except BlockingIOError:
            return
        except OSError as e:
            raise TransportError(f"round {self.round}: stream from member {self.members[inbound.peer]} "
                                 f"failed: {e}") from None
        if want and n == 0:
            raise TransportError(f"round {self.round}: member {self.members[inbound.peer]} closed its stream")
        inbound.got += n
        if inbound.got < len(inbound.view):
            return
        if inbound.header is None:
            inbound.header = self._check(inbound, unpack(inbound.head))
            inbound.view, inbound.got = self.targets(inbound.header), 0
            if inbound.header.length:
                return
        header, inbound.header = inbound.header, None
        inbound.view, inbound.got = memoryview(inbound.head), 0
        inbound.kinds.popleft()
        if not inbound.kinds:
            self._done(inbound.sock)
        self.on_frame(header)

    def _check(self, inbound: _Inbound, h: Header) -> Header:
        expected = inbound.kinds[0]
        who = self.members[inbound.peer]
        if h.members != self.members or h.sender != inbound.peer:
            raise TransportError(f"round {self.round}: member {who} is in group {list(h.members)} as rank "
                                 f"{h.sender}, we are in {list(self.members)}")
        if h.round != self.round or h.kind != expected:
            raise TransportError(f"round {self.round}: member {who} sent {KIND_NAMES[h.kind]} of round {h.round}, "
                                 f"expected {KIND_NAMES[expected]}")
        return h
