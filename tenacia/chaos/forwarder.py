"""A user-space IPv4 router between TUN devices that holds every packet for a chosen delay.

Linux netem is not in every kernel; this forwarder gives a lab link one-way latency without it.
``LinkLab`` starts it (``python -m tenacia.chaos.forwarder``) inside the lab's hub namespace; it
creates one TUN device per node (``tun<k>``, no packet-information header), prints ``ready`` on
stdout, and from then on reads IPv4 packets from every device and writes each to the device of
the node that owns its destination address, ``delay_ms`` after it arrived.

Contract:
- Order is kept per output device: a packet is never released before one that arrived earlier
  for the same device, also after the delay is lowered (release = max(arrival + delay, previous
  release on that device)).
- Packets to an address no node owns are dropped; so are non-IPv4 packets (IPv6 is off in the lab).
- Loss: each routed packet is dropped with probability ``loss`` (``Loss``: a generator seeded by
  ``--seed``, one draw per routed packet, so the same packet sequence loses the same packets).
- Counters per node: bytes and packets it sent (read from its device, lost ones included) and
  received (written to its device), and packets of its lost on the way.
- Commands on stdin, one a line: ``delay <ms>`` sets the one-way delay for packets that arrive
  from then on (packets in flight keep theirs); ``loss <p>`` the loss probability; ``stats``
  prints the counters as one JSON line on stdout (``{address: {sent_bytes, sent_packets,
  received_bytes, received_packets, lost_packets}}``). End of stdin, SIGTERM or the death of the
  parent (the lab) ends the process; the TUN devices are not persistent, so they vanish with it.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import heapq
import ipaddress
import json
import os
import random
import select
import signal
import struct
import sys
import time

from ..process import die_with_parent

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65536


def open_tun(name: str) -> int:
    """A non-blocking fd on a new TUN device ``name`` (IPv4 packets, no header)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Loss:
    """Which packets the link loses: each with probability ``p``, one draw per packet from a
    generator seeded by ``seed`` (the same packets in the same order lose the same ones)."""

    def __init__(self, p: float, seed: int):
        self.rng = random.Random(seed)
        self.set(p)

    def set(self, p: float) -> None:
        """A new probability for the packets from now on (the draws go on from where they are)."""
        if not 0 <= p < 1:
            raise ValueError(f"loss must be a probability in [0, 1), got {p}")
        self.p = p

    def drop(self) -> bool:
        return self.p > 0 and self.rng.random() < self.p


class Forwarder:
    """Routes packets between ``fds`` by destination address: ``routes[dst ip bytes] = fd``;
    ``names[fd]`` is the address of the node behind ``fd`` (for the counters)."""

    def __init__(self, fds: list[int], routes: dict[bytes, int], delay_s: float, loss: Loss | None = None,
                 names: dict[int, str] | None = None):
        self.fds = fds
        self.routes = routes
        self.delay_s = delay_s
        self.loss = loss or Loss(0.0, 0)
        self.names = names or {fd: str(fd) for fd in fds}
        self.queue: list[tuple[float, int, int, bytes]] = []  # (release time, seq, out fd, packet)
        self.last_release = {fd: 0.0 for fd in fds}
        self.seq = 0
        self.forwarded = 0
        self.dropped = 0
        # per node (fd): [sent bytes, sent packets, received bytes, received packets, lost packets]
        self.counts = {fd: [0, 0, 0, 0, 0] for fd in fds}

    def stats(self) -> dict[str, dict[str, int]]:
        keys = ("sent_bytes", "sent_packets", "received_bytes", "received_packets", "lost_packets")
        return {self.names[fd]: dict(zip(keys, c, strict=True)) for fd, c in self.counts.items()}

    def receive(self, fd: int, now: float) -> None:
        """Read every packet waiting on ``fd`` and schedule it."""
        count = self.counts[fd]
        while True:
            try:
                packet = os.read(fd, MAX_PACKET)
            except BlockingIOError:
                return
            count[0] += len(packet)
            count[1] += 1
            out = self.routes.get(packet[16:20]) if len(packet) >= 20 and packet[0] >> 4 == 4 else None
            if out is None:
                self.dropped += 1
                continue
            if self.loss.p > 0 and self.loss.drop():
                count[4] += 1
                continue
            release = max(now + self.delay_s, self.last_release[out])
            self.last_release[out] = release
            heapq.heappush(self.queue, (release, self.seq, out, packet))
            self.seq += 1

    def release_due(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, out, packet = heapq.heappop(self.queue)
            try:
                os.write(out, packet)
                self.forwarded += 1
                count = self.counts[out]
                count[2] += len(packet)
                count[3] += 1
            except OSError as e:  # a device that is down or full drops, as a wire would
                if e.errno not in (errno.EAGAIN, errno.EIO, errno.ENOBUFS):
                    raise
                self.dropped += 1

    def timeout(self, now: float) -> float | None:
        return max(0.0, self.queue[0][0] - now) if self.queue else None

    def command(self, line: str) -> str | None:
        """Apply one control line (module docstring); the reply to print, if any."""
        word, _, arg = line.strip().partition(" ")
        if word == "delay":
            self.delay_s = float(arg) / 1000.0
        elif word == "loss":
            self.loss.set(float(arg))
        elif word == "stats":
            return json.dumps(self.stats())
        return None

    def run(self, control: int) -> None:
        """Serve until ``control`` (stdin) closes."""
        poller = select.epoll()
        for fd in self.fds:
            poller.register(fd, select.EPOLLIN)
        poller.register(control, select.EPOLLIN)
        pending = b""
        while True:
            now = time.monotonic()
            self.release_due(now)
            wait = self.timeout(time.monotonic())
            for fd, _ in poller.poll(-1 if wait is None else wait):
                now = time.monotonic()
                if fd == control:
                    chunk = os.read(control, 4096)
                    if not chunk:
                        return
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        reply = self.command(line.decode())
                        if reply is not None:
                            print(reply, flush=True)
                else:
                    self.receive(fd, now)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--node", action="append", required=True, metavar="IFNAME=ADDRESS",
                   help="one TUN device to create and the IPv4 address its node owns (repeatable)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay for every packet")
    p.add_argument("--loss", type=float, default=0.0, help="probability that a packet is lost, in [0, 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the loss draws")
    args = p.parse_args(argv)
    die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fds, routes, names = [], {}, {}
    for spec in args.node:
        name, _, address = spec.partition("=")
        fd = open_tun(name)
        fds.append(fd)
        routes[ipaddress.IPv4Address(address).packed] = fd
        names[fd] = address
    print("ready", flush=True)
    Forwarder(fds, routes, args.delay_ms / 1000.0, Loss(args.loss, args.seed), names).run(sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
