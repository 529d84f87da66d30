"""Link chaos on real namespaces: gloo all-reduce between two namespaced hosts, with added latency
and a bandwidth cap, and teardown that leaves nothing behind."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tenacia.chaos import netns
from tenacia.chaos.link import LinkLab, cleanup_stale
from tenacia.config import ConfigError

OK, WHY = netns.available()
needs_netns = pytest.mark.skipif(not OK, reason=f"link chaos needs root and 'ip netns': {WHY}")
WORKER = str(Path(__file__).with_name("allreduce_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line of ``proc``'s stdout, or fail after ``timeout`` seconds (never hang the suite)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"worker {proc.args} said nothing in {timeout}s"
    line = proc.stdout.readline()
    assert line, f"worker exited with code {proc.wait(5)}"
    return line


class Pair:
    """Rank 0 in node 0 (hosting the TCPStore), rank 1 in node 1."""

    def __init__(self, lab: LinkLab):
        env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
        kw = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        host = lab.nodes[0].address
        self.r0 = lab.popen(0, [sys.executable, WORKER, "--rank", "0", "--host", host], **kw)
        port = read_line(self.r0, 30).split()[1]
        self.r1 = lab.popen(1, [sys.executable, WORKER, "--rank", "1", "--host", host, "--port", port], **kw)

    def ask(self, command: str, timeout: float = 20) -> list[dict]:
        for proc in (self.r0, self.r1):
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        return [json.loads(read_line(proc, timeout)) for proc in (self.r0, self.r1)]


@needs_netns
@pytest.mark.timeout(40)
def test_latency_slows_allreduce_by_the_round_trip():
    with LinkLab(nodes=2, link="tun") as lab:
        pair = Pair(lab)
        base = pair.ask("tiny 20")
        assert [r["sum"] for r in base] == [3.0, 3.0]  # 1 + 2: the reduction crossed the link
        lab.set_delay(25.0)  # one way: 50 ms round trip
        slow = pair.ask("tiny 6")
        added = slow[0]["median_s"] - base[0]["median_s"]
        # A 2-rank all-reduce of one element needs at least one round trip; 3x margin above.
        assert 0.045 <= added <= 0.15 + 3 * 0.05, (base, slow)
        lab.set_delay(0.0)
        again = pair.ask("tiny 10")
        assert again[0]["median_s"] < 0.02, again


@needs_netns
@pytest.mark.timeout(40)
def test_tbf_caps_throughput():
    nbytes = 2_000_000
    with LinkLab(nodes=2, link="veth") as lab:
        pair = Pair(lab)
        free = pair.ask(f"bulk {nbytes} 3")[0]["median_s"]
        lab.set_rate(16.0)  # 2 MB/s per sender
        capped = pair.ask(f"bulk {nbytes} 2")[0]["median_s"]
    # A 2-rank ring all-reduce sends the whole tensor from each rank (half in reduce-scatter,
    # half in all-gather): at 2 MB/s that is 1 s, whatever the link could do uncapped.
    floor = nbytes / (16e6 / 8)
    assert capped >= 0.85 * floor, (free, capped)
    assert capped <= 3 * floor, (free, capped)
    assert free < capped / 4, (free, capped)


@needs_netns
@pytest.mark.timeout(30)
def test_teardown_removes_everything_even_on_failure():
    with pytest.raises(RuntimeError, match="boom"):
        with LinkLab(nodes=3, delay_ms=5.0) as lab:
            names = [lab.hub] + [n.netns for n in lab.nodes]
            forwarder = lab.forwarder
            sleeper = lab.popen(2, ["sleep", "60"])
            sleeper.send_signal(19)  # SIGSTOP: a stopped process must still be killed
            raise RuntimeError("boom")
    assert not set(names) & set(netns.names())
    assert forwarder.poll() is not None and sleeper.poll() is not None


@needs_netns
@pytest.mark.timeout(30)
def test_cleanup_stale_removes_a_dead_runs_lab():
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"tn-{dead.pid}-0-0"
    netns.run("ip", "netns", "add", name)
    left = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"], start_new_session=True,
                            preexec_fn=netns.child_setup)
    try:
        deadline = time.monotonic() + 5
        while not netns.pids(name) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert name in cleanup_stale()
        assert name not in netns.names()
        assert left.wait(5) == -9
    finally:
        netns.kill_group(left)
        netns.delete(name)


@needs_netns
@pytest.mark.timeout(30)
def test_disconnect_cuts_a_node_off():
    server = "import socket; s = socket.socket(); s.bind(('0.0.0.0', 7001)); s.listen(); s.accept()"
    probe = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], 7001), timeout=1).close()\n"
             "    print('up')\nexcept OSError:\n    print('down')")
    with LinkLab(nodes=2) as lab:
        lab.popen(1, [sys.executable, "-c", server])
        time.sleep(0.3)
        lab.disconnect(1)
        cut = lab.popen(0, [sys.executable, "-c", probe, lab.nodes[1].address], stdout=subprocess.PIPE, text=True)
        assert cut.communicate(timeout=10)[0].strip() == "down"
        lab.reconnect(1)
        time.sleep(0.1)
        back = lab.popen(0, [sys.executable, "-c", probe, lab.nodes[1].address], stdout=subprocess.PIPE, text=True)
        assert back.communicate(timeout=10)[0].strip() == "up"


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="link.delay_ms"):
        LinkLab(nodes=2, link="veth", delay_ms=10.0)
    with pytest.raises(ConfigError, match="link.nodes"):
        LinkLab(nodes=1)
