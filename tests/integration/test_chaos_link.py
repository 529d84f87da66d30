"""`tenacia chaos link`: a real training job with each replica in a network namespace of its own,
behind the TUN forwarder; bytes counted per node, live changes, and nothing left behind, also
after a SIGINT in the middle of the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tenacia.chaos import netns
from tenacia.events import read_events
from tenacia.process import alive

from .procs import train_args, wait_for

OK, WHY = netns.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"network namespaces: {WHY}")
LIMIT_S = 240  # a safety limit, not a speed assertion
ECHO = ("import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 7100)); s.listen()\nprint('up', flush=True)\nc, _ = s.accept()\n"
        "c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
        "while (b := c.recv(1)):\n    c.sendall(b)")
PING = ("import socket, statistics, sys, time\nc = socket.create_connection((sys.argv[1], 7100), timeout=20)\n"
        "c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\ntimes = []\nfor _ in range(6):\n"
        "    t = time.perf_counter(); c.sendall(b'x'); c.recv(1); times.append(time.perf_counter() - t)\n"
        "print(statistics.median(times[1:]))")


def link_cmd(run_dir, *flags: str, steps: int, faults: str = "[]") -> list[str]:
    train = train_args(run_dir, f"train.steps={steps}", "checkpoint.every=5", f"chaos.faults={faults}")
    return ["chaos", "link", *flags, "--", sys.executable, "-m", "tenacia", *train, "--replicas", "2"]


def lab_left(pid: int) -> list[str]:
    return [n for n in netns.names() if n.startswith(f"tn-{pid}-")]


def round_trip(state: dict) -> float:
    """Median TCP ping-pong time (s) from node 0 to node 1 of the running lab."""
    a, b = state["nodes"][0], state["nodes"][1]
    server = subprocess.Popen(["ip", "netns", "exec", b["netns"], sys.executable, "-c", ECHO],
                              stdout=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=netns.child_setup)
    try:
        assert server.stdout.readline().strip() == "up"
        out = subprocess.run(["ip", "netns", "exec", a["netns"], sys.executable, "-c", PING, b["address"]],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return float(out.stdout)
    finally:
        netns.kill_group(server)


@pytest.mark.timeout(LIMIT_S + 60)
def test_a_job_behind_the_link_finishes_with_bytes_per_node_and_leaves_nothing(tmp_path, procs):
    run = tmp_path / "run"
    faults = '["link_delay@3:3", "link_rate@6:50"]'
    code = procs.run(link_cmd(run, "--delay", "2ms", "--rate", "100mbit", steps=10, faults=faults),
                     timeout=LIMIT_S, log=tmp_path / "link.log")
    log = (tmp_path / "link.log").read_text()
    assert code == 0, log[-3000:]
    state = json.loads((run / "link.json").read_text())
    assert state["finished"] and state["exit_code"] == 0
    for node in state["bytes"]:
        assert node["sent_bytes"] > 100_000 and node["received_bytes"] > 100_000, state["bytes"]
    assert "bytes counted at the forwarder" in log and "node 1 (10.213.0.2, replicas 1)" in log
    # every replica spoke from its own namespace's address
    for r in (0, 1):
        assert json.loads((run / "replicas" / f"r{r}.json").read_text())["control"].startswith(f"10.213.0.{r + 1}:")
    changed = [e for e in read_events(run / "events.jsonl") if e["event"] == "link_changed"]
    assert [(e["spec"], e["by"]) for e in changed] == [("link_delay@3:3", "schedule"), ("link_rate@6:50", "schedule")]
    assert changed[0]["step"] >= 3 and (state["delay_ms"], state["rate_mbit"]) == (3.0, 50.0)
    assert procs.run(["report", "--check", str(run)], timeout=120, log=tmp_path / "report.log") == 0, \
        (tmp_path / "report.log").read_text()[-2000:]
    assert lab_left(state["pid"]) == [] and not alive(state["forwarder_pid"])


@pytest.mark.timeout(LIMIT_S + 60)
def test_live_delay_change_then_sigint_cleans_up_everything(tmp_path, procs):
    run = tmp_path / "run"
    link = procs.start(link_cmd(run, "--delay", "0ms", steps=100_000), log=tmp_path / "link.log")
    replicas = [run / "replicas" / f"r{r}.json" for r in (0, 1)]
    wait_for(lambda: all(f.exists() for f in replicas) or link.poll() is not None, LIMIT_S, "both replicas to start")
    assert link.poll() is None, (tmp_path / "link.log").read_text()[-3000:]
    state = json.loads((run / "link.json").read_text())
    before = round_trip(state)
    assert procs.run(["chaos", "link-set", str(run), "--delay", "50ms"], timeout=60) == 0
    after = round_trip(state)
    assert after >= 0.095, (before, after)  # the forwarder holds each packet 50 ms each way
    assert before < after / 5, (before, after)
    events = [e for e in read_events(run / "events.jsonl") if e["event"] == "link_changed"]
    assert [(e["change"], e["value"], e["by"]) for e in events] == [("delay_ms", 50.0, "link-set")]
    assert procs.run(["chaos", "link-set", str(run), "--partition", "1:0.5"], timeout=60) == 0
    wait_for(lambda: [e["change"] for e in read_events(run / "events.jsonl") if e["event"] == "link_changed"]
             == ["delay_ms", "disconnect", "reconnect"], 30, "node 1 to be cut off and back")

    pids = [json.loads(f.read_text())["pid"] for f in replicas]
    os.kill(link.pid, signal.SIGINT)
    assert link.wait(timeout=60) == 128 + signal.SIGINT
    final = json.loads((run / "link.json").read_text())
    assert final["finished"] and final["exit_code"] == 128 + signal.SIGINT
    assert all(n["sent_bytes"] > 0 for n in final["bytes"])
    assert lab_left(state["pid"]) == []
    assert not alive(state["forwarder_pid"]) and not any(alive(p) for p in pids)


@pytest.mark.slow
@pytest.mark.timeout(LIMIT_S)
def test_a_failing_command_gives_its_exit_code_and_leaves_nothing(tmp_path, procs):
    (tmp_path / "empty.txt").write_text("")
    run = tmp_path / "run"
    cmd = ["chaos", "link", "--delay", "1ms", "--", sys.executable, "-m", "tenacia", "train", "--replicas", "2",
           "--run-dir", str(run), "-o", f"data.corpus={tmp_path / 'empty.txt'}"]
    assert procs.run(cmd, timeout=LIMIT_S, log=tmp_path / "link.log") == 2  # tenacia's exit code for bad input
    state = json.loads((run / "link.json").read_text())
    assert state["finished"] and state["exit_code"] == 2
    assert lab_left(state["pid"]) == [] and not alive(state["forwarder_pid"])


@pytest.mark.slow
@pytest.mark.timeout(2 * LIMIT_S + 60)
def test_three_replicas_through_loss_and_a_partition(tmp_path, procs):
    """Three nodes, 0.5% of packets lost (TCP retransmits), node 2 cut off for 3 s mid-run: the
    job finishes with its ledger exact and equal states, and the bytes of every node counted."""
    run = tmp_path / "run"
    train = train_args(run, "train.steps=40", "checkpoint.every=10", 'chaos.faults=["partition:2@10:3"]')
    cmd = ["chaos", "link", "--delay", "5ms", "--loss", "0.5%", "--seed", "3", "--nodes", "3", "--",
           sys.executable, "-m", "tenacia", *train, "--replicas", "3"]
    assert procs.run(cmd, timeout=2 * LIMIT_S, log=tmp_path / "link.log") == 0, \
        (tmp_path / "link.log").read_text()[-3000:]
    state = json.loads((run / "link.json").read_text())
    assert len(state["bytes"]) == 3 and all(n["sent_bytes"] > 100_000 for n in state["bytes"])
    assert sum(n["lost_packets"] for n in state["bytes"]) > 0
    changes = [(e["change"], e["node"]) for e in read_events(run / "events.jsonl") if e["event"] == "link_changed"]
    assert changes == [("disconnect", 2), ("reconnect", 2)]
    assert procs.run(["report", "--check", str(run)], timeout=120, log=tmp_path / "report.log") == 0, \
        (tmp_path / "report.log").read_text()[-2000:]
    assert lab_left(state["pid"]) == []
