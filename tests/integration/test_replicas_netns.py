"""Replicas on separate hosts: two network namespaces joined by a veth link, each with its own
launcher, the second joining the first by address and healing from it across the link. Then
replica 1 is frozen on its host (SIGSTOP), expelled, and heals across the link again."""

import json
import sys

import pytest

from tenacia.chaos import netns
from tenacia.chaos.link import LinkLab
from tenacia.events import read_events

from .procs import train_args, wait_for
from .test_replicas import RUN, RUN_LIMIT_S, STEPS, check_run, first_after

ok, why = netns.available()
pytestmark = [pytest.mark.timeout(2 * RUN_LIMIT_S + 60),
              pytest.mark.skipif(not ok, reason=f"network namespaces: {why}")]


def test_replicas_as_separate_hosts_joining_by_address(tmp_path, reference):
    with LinkLab(nodes=2, link="veth") as lab:
        a, b = (node.address for node in lab.nodes)
        log0 = open(tmp_path / "host0.log", "wb")
        args0 = train_args(tmp_path, *RUN, f"replicas.host={a}", "replicas.join_grace_s=1")
        host0 = lab.popen(0, [sys.executable, "-m", "tenacia", *args0, "--replicas", "1"], stdout=log0,
                          stderr=log0)
        addr_file = tmp_path / "replicas" / "r0.json"
        wait_for(addr_file.exists, RUN_LIMIT_S, "replica 0 to publish its address")
        control = json.loads(addr_file.read_text())["control"]
        assert control.startswith(a + ":")
        log1 = open(tmp_path / "host1.log", "wb")
        args1 = train_args(tmp_path, *RUN, f"replicas.host={b}", "replicas.first_id=1",
                           f'replicas.join=["{control}"]', 'chaos.faults=["hang:1@50:+20"]')
        host1 = lab.popen(1, [sys.executable, "-m", "tenacia", *args1, "--replicas", "1"], stdout=log1,
                          stderr=log1)
        assert host0.wait(timeout=RUN_LIMIT_S) == 0, (tmp_path / "host0.log").read_text()[-2000:]
        assert host1.wait(timeout=60) == 0, (tmp_path / "host1.log").read_text()[-2000:]
    events = check_run(tmp_path, reference)
    joined = first_after(events, "heal_done", 0, replica=1)
    assert joined["peer"] == 0 and joined["bytes"] > 0
    fault = first_after(events, "fault_injected", 0, replica=1)
    first_after(events, "heal_done", fault["t"], replica=1)
    assert any(e["event"] == "step_committed" and e.get("members") == [0, 1] and e["step"] > 90 for e in events)
    assert STEPS == max(e["step"] for e in read_events(tmp_path / "events.jsonl") if e["event"] == "step_committed")
