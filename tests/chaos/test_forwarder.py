"""The TUN forwarder's routing, delay and ordering, driven through datagram socket pairs that
stand in for TUN devices (same read/write-one-packet semantics, no root needed)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from tenacia.chaos.forwarder import Forwarder, Loss


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


def test_loss_draws_are_fixed_by_the_seed():
    def pattern(seed: int, n: int = 4000) -> list[bool]:
        loss = Loss(0.05, seed)
        return [loss.drop() for _ in range(n)]

    a, b, c = pattern(7), pattern(7), pattern(8)
    assert a == b and a != c
    assert 0.03 * 4000 < sum(a) < 0.07 * 4000  # 200 expected; a binomial's 7 sigma either side
    assert not any(Loss(0.0, 7).drop() for _ in range(1000))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Loss(1.0, 0)


@pytest.mark.timeout(20)
def test_loss_drops_the_same_packets_for_the_same_seed_and_counts_per_node():
    def run(seed: int) -> tuple[list[int], dict]:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
        for _, theirs in pairs:
            theirs.setblocking(False)
        fds = [p[1].fileno() for p in pairs]
        fwd = Forwarder(fds, {socket.inet_aton("10.213.0.1"): fds[0], socket.inet_aton("10.213.0.2"): fds[1]},
                        delay_s=0.0, loss=Loss(0.2, seed), names={fds[0]: "10.213.0.1", fds[1]: "10.213.0.2"})
        for seq in range(200):
            pairs[0][0].send(ipv4_packet("10.213.0.2", seq))
            fwd.receive(fds[0], time.monotonic())
        pairs[1][0].send(ipv4_packet("10.213.0.1", 7))
        fwd.receive(fds[1], time.monotonic())
        fwd.release_due(time.monotonic() + 1)
        pairs[1][0].setblocking(False)
        got = []
        while True:
            try:
                got.append(int.from_bytes(pairs[1][0].recv(100)[20:], "big"))
            except BlockingIOError:
                break
        stats = json.loads(fwd.command("stats"))
        for a, b in pairs:
            a.close()
            b.close()
        return got, stats

    got, stats = run(3)
    again, _ = run(3)
    other, _ = run(4)
    assert got == again and got != other and got == sorted(got)
    lost = 200 - len(got)
    assert 10 < lost < 80  # 40 expected
    assert stats["10.213.0.1"] == {"sent_bytes": 200 * 24, "sent_packets": 200, "received_bytes": 24,
                                   "received_packets": 1, "lost_packets": lost}
    assert stats["10.213.0.2"]["received_packets"] == len(got) and stats["10.213.0.2"]["sent_packets"] == 1
