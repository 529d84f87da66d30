"""Leader terms as etcd leases, across a real partition: three hosts and an etcd host in the
project's network namespaces (veth), one launcher and replica per host, the run directory shared.

1. The leader is cut off from its members but still reaches etcd (blackhole routes between it
   and each member): it hears none of them, so after one hang bound it releases its lease and
   steps down; the others elect a leader and go on; when the link comes back it heals.
2. The new leader's host is cut off from everyone, etcd included: it cannot renew, so it stops
   committing within one lease TTL; the others claim the next term once etcd expires the lease.
Then: the run finishes, the ledger is exact, every replica holds the same state.

After the second cut the two others run 20x slower (a SIGSTOP duty cycle) until the cut-off one has
healed: on a quiet machine the steps left take about a second, less than a process needs to notice
the link is back, rejoin and heal, and the run would end with two fingerprints (it did once in a
fresh-clone CI).
"""

import json
import signal
import sys
import time

import pytest

from tenacia.chaos import netns
from tenacia.chaos.etcd import ETCD, MISSING, EtcdServer
from tenacia.chaos.injector import Slowdown, send
from tenacia.chaos.link import LinkLab
from tenacia.events import read_events

from .procs import train_args, wait_for
from .test_replicas import RUN_LIMIT_S, first_after

STEPS = 120
RUN = [f"train.steps={STEPS}", "checkpoint.every=40", "optim.warmup_steps=10", "train.batch_size=32",
       "train.micro_batch_size=16"]

ok, why = netns.available()
TTL = 2
pytestmark = [pytest.mark.timeout(2 * RUN_LIMIT_S + 60),
              pytest.mark.skipif(not ok, reason=f"network namespaces: {why}"),
              pytest.mark.skipif(ETCD is None, reason=MISSING)]


def committed_by_other(run, old, t):
    """A step committed after time ``t`` by a leader other than replica ``old``."""
    return any(e["event"] == "step_committed" and e["t"] > t and e["source"] != f"coordinator:{old}"
               and e["source"].startswith("coordinator:") for e in read_events(run / "events.jsonl"))


def replica_pid(run, k):
    """Replica ``k``'s process id, from its address file (None before it has one)."""
    try:
        return json.loads((run / "replicas" / f"r{k}.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def healed(run, k, t):
    """Replica ``k`` healed after time ``t``."""
    return any(e["event"] == "heal_done" and e.get("replica") == k and e["t"] > t
               for e in read_events(run / "events.jsonl"))


def all_three_after(run, t):
    """The step of a commit by all three replicas after time ``t`` (None before one)."""
    path = run / "events.jsonl"
    steps = [e["step"] for e in read_events(path) if path.exists() and e["event"] == "step_committed"
             and e.get("members") == [0, 1, 2] and e["t"] > t] if path.exists() else []
    return steps[0] if steps else None


def test_a_partitioned_leader_steps_down_or_stops_within_its_lease(tmp_path, procs):
    with LinkLab(nodes=4, link="veth") as lab:
        etcd_node = lab.nodes[3]
        with EtcdServer(tmp_path / "etcd", host=etcd_node.address, argv_prefix=lab.exec_argv(3, [])) as etcd:
            common = [*RUN, "replicas.spares=0", f"replicas.lease={etcd.url}", f"replicas.lease_ttl_s={TTL}", "replicas.join_grace_s=1"]
            hosts = []
            for k in range(3):
                extra = [f"replicas.host={lab.nodes[k].address}"]
                if k:
                    control = json.loads((tmp_path / "replicas" / "r0.json").read_text())["control"]
                    extra += [f"replicas.first_id={k}", f'replicas.join=["{control}"]']
                log = open(tmp_path / f"host{k}.log", "wb")
                hosts.append(lab.popen(k, [sys.executable, "-m", "tenacia", *train_args(tmp_path, *common, *extra),
                                           "--replicas", "1"], stdout=log, stderr=log))
                if k == 0:
                    wait_for((tmp_path / "replicas" / "r0.json").exists, RUN_LIMIT_S, "replica 0's address")

            wait_for(lambda: all_three_after(tmp_path, 0), RUN_LIMIT_S, "a step of all three replicas")
            cut1 = time.time()
            lab.cut(0, 1), lab.cut(0, 2)  # the leader still reaches etcd (node 3)
            wait_for(lambda: committed_by_other(tmp_path, 0, cut1), RUN_LIMIT_S, "the others to go on")
            lab.mend(0, 1), lab.mend(0, 2)
            mended = time.time()

            wait_for(lambda: all_three_after(tmp_path, mended), RUN_LIMIT_S, "all three again")
            events = read_events(tmp_path / "events.jsonl")
            # the leader is the one that committed that step (the newest term may belong to one that
            # has stepped down since)
            source = next(e["source"] for e in events if e["event"] == "step_committed"
                          and e.get("members") == [0, 1, 2] and e["t"] > mended)
            leader = max((e for e in events if e["event"] == "coordinator_changed"
                          and f"coordinator:{e['coordinator']}" == source), key=lambda e: e["term"])
            cut2 = time.time()
            lab.disconnect(leader["coordinator"])  # from its members and from etcd
            slow = [Slowdown(lambda k=k: replica_pid(tmp_path, k), 20) for k in range(3) if k != leader["coordinator"]]
            try:
                wait_for(lambda: committed_by_other(tmp_path, leader["coordinator"], cut2), RUN_LIMIT_S,
                         "the others to go on")
                for s in slow:
                    s.start()
                lab.reconnect(leader["coordinator"])
                wait_for(lambda: healed(tmp_path, leader["coordinator"], cut2), RUN_LIMIT_S,
                         "the cut-off leader to heal")
            finally:
                for s in slow:
                    s.stopped.set()
                for s in slow:
                    if s.is_alive():
                        s.join(timeout=5)
                for k in range(3):  # a duty cycle stopped between its SIGSTOP and SIGCONT
                    pid = replica_pid(tmp_path, k)
                    if pid is not None:
                        send(pid, signal.SIGCONT)

            for k, host in enumerate(hosts):
                assert host.wait(timeout=RUN_LIMIT_S) == 0, (tmp_path / f"host{k}.log").read_text()[-3000:]

    # the run proves itself: the ledger exact, every replica's final state equal
    assert procs.run(["report", "--check", str(tmp_path)], timeout=120, log=tmp_path / "report.log") == 0, \
        (tmp_path / "report.log").read_text()[-2000:]
    out = (tmp_path / "report.log").read_text()
    assert f"sample ledger: ok: {STEPS} committed steps" in out and "3 fingerprint(s) equal" in out, out[-2000:]
    events = read_events(tmp_path / "events.jsonl")
    # 1. the cut-off leader stepped down on its own, the others went on under a newer term
    alone = first_after(events, "coordinator_alone", cut1, coordinator=0)
    assert alone["t"] - cut1 < 3 * 1.5 * 2  # a hang bound (< 2 s here) with a 3x margin
    new1 = first_after(events, "coordinator_changed", cut1)
    assert new1["coordinator"] != 0 and new1["term"] > 1
    assert first_after(events, "heal_done", cut1, replica=0)["t"] > cut1
    # 2. the leader cut off from etcd committed nothing after its lease ran out
    old = leader["coordinator"]
    regained = [e["t"] for e in events if e["event"] == "coordinator_changed" and e["coordinator"] == old
                and e["term"] > leader["term"]]  # leading again later, under a newer term, is allowed
    late = [e for e in events if e["event"] == "step_committed" and e["source"] == f"coordinator:{old}"
            and cut2 + TTL < e["t"] < min(regained, default=float("inf"))]
    assert late == [], late
    new2 = first_after(events, "coordinator_changed", cut2)
    assert new2["coordinator"] != old and new2["term"] > leader["term"]
    assert first_after(events, "step_committed", new2["t"])
    assert first_after(events, "heal_done", cut2, replica=old)
