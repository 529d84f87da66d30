"""Lab networks for link chaos: test hosts in Linux network namespaces, joined by a link whose
latency and bandwidth a test chooses.

``LinkLab`` makes ``nodes`` namespaces that act as separate hosts. They share one private subnet,
``10.213.0.0/24`` (node k owns ``10.213.0.<k+1>``), which lives only inside the lab's own
namespaces: no address, route or device is added to the host's namespace, so it cannot clash
with the host's networks, and two labs (even with the same addresses) never see each other.

Two kinds of link:
- ``veth``: each node has a veth pair to a bridge in the lab's hub namespace. Kernel speed.
- ``tun``: each node has a TUN device whose other side is a user-space forwarder
  (``tenacia.chaos.forwarder``) in the hub namespace; it holds every packet ``delay_ms`` (one
  way, so a round trip gains ``2 * delay_ms``), keeps packet order, loses packets with probability
  ``loss`` (seeded) and counts each node's bytes (``counters()``). Linux netem is not in
  every kernel, this works without it. A single Python forwarder is much slower than a veth
  (measured in docs/fault-model.md, "The network lab").
Either kind can cap each node's sending rate with a ``tbf`` qdisc (``rate_mbit``).

Inside node k the interface is ``lab0``; ``lo`` is up. ``env(k)`` sets ``GLOO_SOCKET_IFNAME=lab0``
so gloo binds the lab link, and ``popen(k, argv)`` runs a command in the node (``ip netns exec``)
in its own session with a parent-death signal; ``close()`` kills every such process.

Names: every namespace is ``tn-<pid>-<lab>-<k>`` or ``tn-<pid>-<lab>-hub``, with the pid of the
process that made it. ``cleanup_stale()`` (called by every new lab) deletes the namespaces, links,
forwarders and processes of labs whose owner process is dead (a run killed before teardown).
Needs root and iproute2 (``netns.available()``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import select
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

from ..config import check, check_choice, from_dict
from ..process import alive
from . import netns

SUBNET = "10.213.0"
IFNAME = "lab0"
_STALE = re.compile(r"^tn-(\d+)-\d+-(?:hub|\d+)$")
_labs = itertools.count()


@dataclass(kw_only=True, slots=True)
class LinkConfig:
    """The lab's hosts and the link between them."""

    nodes: int = 2  # namespaces, one per host
    link: Literal["auto", "veth", "tun"] = "auto"  # auto: tun when delay_ms > 0, else veth
    delay_ms: float = 0.0  # one-way delay of every packet (tun only)
    rate_mbit: float = 0.0  # cap on each node's sending rate, megabit/s; 0: no cap
    loss: float = 0.0  # probability that the forwarder loses a packet (tun only), seeded by ``seed``
    seed: int = 0
    mtu: int = 1500

    def __post_init__(self) -> None:
        check(2 <= self.nodes <= 250, "nodes", self.nodes, "an integer from 2 to 250")
        check_choice("link", self.link, ("auto", "veth", "tun"))
        check(self.delay_ms >= 0, "delay_ms", self.delay_ms, "a number of milliseconds >= 0")
        check(self.link != "veth" or self.delay_ms == 0, "delay_ms", self.delay_ms,
              "0 with link = 'veth' (delay needs the user-space forwarder: link = 'tun' or 'auto')")
        check(self.rate_mbit >= 0, "rate_mbit", self.rate_mbit, "a rate in megabit/s >= 0 (0: no cap)")
        check(0 <= self.loss < 1, "loss", self.loss, "a probability in [0, 1)")
        check(self.link != "veth" or self.loss == 0, "loss", self.loss,
              "0 with link = 'veth' (loss needs the user-space forwarder: link = 'tun' or 'auto')")
        check(576 <= self.mtu <= 65000, "mtu", self.mtu, "an integer from 576 to 65000")

    @property
    def kind(self) -> str:
        if self.link == "auto":
            return "tun" if self.delay_ms > 0 or self.loss > 0 else "veth"
        return self.link


@dataclass(frozen=True, slots=True)
class Node:
    index: int
    netns: str
    address: str
    ifname: str = IFNAME


class LinkLab:
    """A set of namespaced hosts on one link. Use as a context manager; ``close`` is idempotent
    and removes everything the lab made, whatever state it is in."""

    def __init__(self, config: LinkConfig | None = None, **fields: object):
        self.config = config if config is not None else from_dict(LinkConfig, fields, prefix="link")
        self.prefix = f"tn-{os.getpid()}-{next(_labs)}"
        self.hub = f"{self.prefix}-hub"
        self.nodes = [Node(k, f"{self.prefix}-{k}", f"{SUBNET}.{k + 1}") for k in range(self.config.nodes)]
        self.forwarder: subprocess.Popen | None = None
        self.processes: list[subprocess.Popen] = []
        self._made: list[str] = []

    # ----- life cycle ----------------------------------------------------------------------------
    def __enter__(self) -> LinkLab:
        ok, why = netns.available()
        if not ok:
            raise netns.NetnsError(why)
        cleanup_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.processes:
            netns.kill_group(proc)
        self.processes.clear()
        if self.forwarder is not None:
            netns.kill_group(self.forwarder)
            self.forwarder = None
        for ns in reversed(self._made):
            netns.delete(ns)
        self._made.clear()

    def _add_netns(self, name: str) -> None:
        netns.run("ip", "netns", "add", name)
        self._made.append(name)
        netns.run("ip", "-n", name, "link", "set", "lo", "up")
        # IPv6 off: no router solicitations or duplicate-address probes crossing the link.
        netns.run("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                  check=False)

    def _build(self) -> None:
        cfg = self.config
        self._add_netns(self.hub)
        for node in self.nodes:
            self._add_netns(node.netns)
        if cfg.kind == "veth":
            netns.run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            netns.run("ip", "-n", self.hub, "link", "set", "br0", "up")
            for node in self.nodes:
                hub_end = f"v{node.index}"
                netns.run("ip", "-n", self.hub, "link", "add", hub_end, "mtu", str(cfg.mtu), "type", "veth",
                          "peer", "name", node.ifname, "netns", node.netns)
                netns.run("ip", "-n", self.hub, "link", "set", hub_end, "master", "br0", "up")
        else:
            self._start_forwarder()
            for node in self.nodes:
                tun = f"tun{node.index}"
                netns.run("ip", "-n", self.hub, "link", "set", tun, "netns", node.netns)
                netns.run("ip", "-n", node.netns, "link", "set", tun, "name", node.ifname)
                netns.run("ip", "-n", node.netns, "link", "set", node.ifname, "mtu", str(cfg.mtu))
        for node in self.nodes:
            netns.run("ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev", node.ifname)
            netns.run("ip", "-n", node.netns, "link", "set", node.ifname, "up")
        if cfg.rate_mbit > 0:
            self.set_rate(cfg.rate_mbit)

    def _start_forwarder(self) -> None:
        cfg = self.config
        argv = [sys.executable, "-m", "tenacia.chaos.forwarder", "--delay-ms", str(cfg.delay_ms),
                "--loss", str(cfg.loss), "--seed", str(cfg.seed)]
        for node in self.nodes:
            argv += ["--node", f"tun{node.index}={node.address}"]
        self.forwarder = subprocess.Popen(
            ["ip", "netns", "exec", self.hub, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=_pythonpath_env(), start_new_session=True, preexec_fn=netns.child_setup)
        line = self.forwarder.stdout.readline()
        if line.strip() != b"ready":
            raise netns.NetnsError(f"the TUN forwarder did not start (said {line!r}, "
                                   f"exit code {self.forwarder.poll()})")

    # ----- changing the link live ----------------------------------------------------------------
    def set_delay(self, delay_ms: float) -> None:
        """New one-way delay for packets sent from now on (tun links only); order is kept."""
        check(delay_ms >= 0, "link.delay_ms", delay_ms, "a number of milliseconds >= 0")
        self._tell("delay_ms", delay_ms, f"delay {delay_ms}")

    def set_loss(self, loss: float) -> None:
        """New probability of losing a packet, for packets sent from now on (tun links only)."""
        check(0 <= loss < 1, "link.loss", loss, "a probability in [0, 1)")
        self._tell("loss", loss, f"loss {loss}")

    def counters(self, timeout: float = 5.0) -> list[dict[str, int]]:
        """Per node, what crossed the forwarder so far (tun links only): ``sent_bytes``,
        ``sent_packets``, ``received_bytes``, ``received_packets``, ``lost_packets``."""
        self._tell("counters", None, "stats")
        ready, _, _ = select.select([self.forwarder.stdout], [], [], timeout)
        line = self.forwarder.stdout.readline() if ready else b""
        if not line:
            raise netns.NetnsError(f"the TUN forwarder did not answer 'stats' within {timeout}s "
                                   f"(exit code {self.forwarder.poll()})")
        by_address = json.loads(line)
        return [by_address[n.address] for n in self.nodes]

    def _tell(self, what: str, value: object, line: str) -> None:
        check(self.forwarder is not None, f"link.{what}", value,
              "available only on a 'tun' link (make the lab with link='tun')")
        self.forwarder.stdin.write(f"{line}\n".encode())
        self.forwarder.stdin.flush()

    def set_rate(self, rate_mbit: float, node: int | None = None) -> None:
        """Cap the sending rate of one node (or all) at ``rate_mbit``; 0 removes the cap."""
        check(rate_mbit >= 0, "link.rate_mbit", rate_mbit, "a rate in megabit/s >= 0 (0: no cap)")
        for n in self.nodes if node is None else [self.nodes[node]]:
            if rate_mbit == 0:
                netns.run("tc", "-n", n.netns, "qdisc", "del", "dev", n.ifname, "root", check=False)
                continue
            bytes_per_s = rate_mbit * 1e6 / 8
            # A veth hands tbf segmentation-offload packets of up to 64 KiB: a smaller bucket
            # would split them and undershoot the rate (an 8 kB bucket did: docs/fault-model.md,
            # "The network lab").
            burst = max(int(bytes_per_s * 0.004), 65536 + self.config.mtu)
            netns.run("tc", "-n", n.netns, "qdisc", "replace", "dev", n.ifname, "root", "tbf",
                      "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", "200ms")

    def disconnect(self, node: int) -> None:
        """Cut node ``node`` off the link (its interface goes down); packets to it are lost."""
        n = self.nodes[node]
        netns.run("ip", "-n", n.netns, "link", "set", n.ifname, "down")

    def reconnect(self, node: int) -> None:
        n = self.nodes[node]
        netns.run("ip", "-n", n.netns, "link", "set", n.ifname, "up")

    def cut(self, a: int, b: int) -> None:
        """Partition nodes ``a`` and ``b`` from each other only (each still reaches every other
        node): a blackhole route each way, so packets between them vanish without an error."""
        for x, y in ((a, b), (b, a)):
            netns.run("ip", "-n", self.nodes[x].netns, "route", "add", "blackhole", f"{self.nodes[y].address}/32")

    def mend(self, a: int, b: int) -> None:
        for x, y in ((a, b), (b, a)):
            netns.run("ip", "-n", self.nodes[x].netns, "route", "del", "blackhole", f"{self.nodes[y].address}/32",
                      check=False)

    # ----- running things in a node --------------------------------------------------------------
    def env(self, node: int, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a process in ``node``: ``base`` (default: ours) plus GLOO_SOCKET_IFNAME."""
        env = dict(os.environ if base is None else base)
        env["GLOO_SOCKET_IFNAME"] = self.nodes[node].ifname
        return env

    def exec_argv(self, node: int, argv: list[str]) -> list[str]:
        """``argv`` run inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.nodes[node].netns, *argv]

    def popen(self, node: int, argv: list[str], env: dict[str, str] | None = None,
              **kwargs: object) -> subprocess.Popen:
        """Start ``argv`` in ``node`` in a new session with a parent-death SIGKILL; ``close`` kills it."""
        proc = subprocess.Popen(self.exec_argv(node, argv), env=self.env(node, env),
                                start_new_session=True, preexec_fn=netns.child_setup, **kwargs)
        self.processes.append(proc)
        return proc


def cleanup_stale() -> list[str]:
    """Delete every lab namespace (with its processes and links) whose owner process is dead;
    returns the names deleted."""
    removed = []
    for name in netns.names():
        match = _STALE.match(name)
        if match is None or alive(int(match.group(1))):
            continue
        netns.delete(name)
        removed.append(name)
    return removed


def _pythonpath_env() -> dict[str, str]:
    """Our environment with this package importable by a child (also when not installed)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
