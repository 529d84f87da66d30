"""The TUN forwarder's routing, delay and ordering, driven through datagram socket pairs that
stand in for TUN devices (same read/write-one-packet semantics, no root needed)."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tenacia.chaos.forwarder import Forwarder


def ipv4_packet(dst: str, seq: int) -> bytes:
    header = bytes([0x45, 0, 0, 24]) + bytes(12) + socket.inet_aton(dst)
    return header + seq.to_bytes(4, "big")


@pytest.fixture
def wires():
    """Two 'devices': (our end, forwarder's end) per node; node 0 owns .1, node 1 owns .2."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
    for _, theirs in pairs:
        theirs.setblocking(False)
    control_r, control_w = os.pipe()
    fwd = Forwarder([p[1].fileno() for p in pairs],
                    {socket.inet_aton("10.213.0.1"): pairs[0][1].fileno(),
                     socket.inet_aton("10.213.0.2"): pairs[1][1].fileno()}, delay_s=0.05)
    thread = threading.Thread(target=fwd.run, args=(control_r,), daemon=True)
    thread.start()
    yield pairs, fwd, control_w
    os.close(control_w)
    thread.join(5)
    assert not thread.is_alive()
    for a, b in pairs:
        a.close()
        b.close()
    os.close(control_r)


@pytest.mark.timeout(20)
def test_packets_are_delayed_routed_and_kept_in_order(wires):
    pairs, fwd, control = wires
    node0, node1 = pairs[0][0], pairs[1][0]
    node1.settimeout(2)
    sent = time.monotonic()
    for seq in range(50):
        node0.send(ipv4_packet("10.213.0.2", seq))
    got = [int.from_bytes(node1.recv(100)[20:], "big") for _ in range(50)]
    assert got == list(range(50))
    assert time.monotonic() - sent >= 0.05
    # Lowering the delay must not let new packets overtake ones still held.
    node0.send(ipv4_packet("10.213.0.2", 1000))
    os.write(control, b"delay 0\n")
    time.sleep(0.01)
    node0.send(ipv4_packet("10.213.0.2", 1001))
    assert [int.from_bytes(node1.recv(100)[20:], "big") for _ in range(2)] == [1000, 1001]


@pytest.mark.timeout(20)
def test_unknown_destinations_and_non_ipv4_are_dropped(wires):
    pairs, fwd, control = wires
    node0, node1 = pairs[0][0], pairs[1][0]
    node0.send(ipv4_packet("10.213.0.9", 1))
    node0.send(b"\x60" + bytes(39))  # an IPv6 header
    os.write(control, b"delay 0\n")
    node0.send(ipv4_packet("10.213.0.2", 2))
    node1.settimeout(2)
    assert int.from_bytes(node1.recv(100)[20:], "big") == 2
    assert fwd.dropped == 2
