"""The long-link transport on real sockets: sums bit-identical to a local rank-order sum on every
member (threads in one process, then real processes on loopback and across a lab link with
delay), mismatched groups, rounds and sizes refused, and a peer that dies or freezes mid-exchange
making the call raise instead of hang."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from tenacia.chaos import netns
from tenacia.chaos.link import LinkLab
from tenacia.config import ConfigError
from tenacia.process import die_with_parent
from tenacia.train.transport import (
    Mesh,
    TransportConfig,
    TransportError,
    listen,
    rank_order_sum,
    window_for,
)

ROOT = Path(__file__).resolve().parents[3]
WORKER = str(ROOT / "tests" / "chaos" / "collective_worker.py")
NETNS_OK, NETNS_WHY = netns.available()


def in_threads(fn, world: int) -> list:
    """``fn(k)`` for every rank in a thread of its own; the results, or the exceptions, by rank."""
    out: list = [None] * world

    def run(k: int) -> None:
        try:
            out[k] = fn(k)
        except Exception as e:  # noqa: BLE001 - returned for the test to look at
            out[k] = e

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    return out


def meshes(world: int, members: list[list[int]] | None = None, **config) -> list[Mesh]:
    listeners = [listen("127.0.0.1") for _ in range(world)]
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in listeners]
    cfg = TransportConfig(**{"streams": 3, "timeout_s": 10.0, **config})
    return in_threads(lambda k: Mesh.open(k, addresses, listeners[k],
                                          (members or [[7, 3, 9, 1][:world]] * world)[k], cfg), world)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("numel, dtype", [(1, torch.float32), (5, torch.float32), (16_385, torch.float32),
                                          (600_001, torch.float32), (70_000, torch.bfloat16)])
def test_every_member_gets_the_rank_order_sum_bit_for_bit(numel, dtype):
    world = 4
    group = meshes(world)
    parts = [torch.randn(numel, generator=torch.Generator().manual_seed(k)).to(dtype) * 1e3 for k in range(world)]
    got = in_threads(lambda k: group[k].allreduce_sum(parts[k].clone(), 1), world)
    want = rank_order_sum(parts)
    assert all(g.dtype == dtype and g.view(torch.uint8).tolist() == want.view(torch.uint8).tolist() for g in got)
    # the order matters in float32: the reverse order gives other bits somewhere
    if numel > 1000 and dtype == torch.float32:
        assert not torch.equal(rank_order_sum(parts[::-1]), want)
    twice = in_threads(lambda k: group[k].allreduce_sum(parts[k].view(-1, 1), 2), world)  # a second round
    assert all(torch.equal(t.view(-1), want) and t.shape == (numel, 1) for t in twice)


@pytest.mark.timeout(60)
def test_allgather_returns_every_members_bytes_in_rank_order():
    group = meshes(3, streams=2)
    got = in_threads(lambda k: group[k].allgather(bytes([k]) * (1000 * k), 1), 3)
    assert got == [[b"", b"\x01" * 1000, b"\x02" * 2000]] * 3


@pytest.mark.timeout(60)
def test_alltoall_gives_each_member_what_every_member_sent_it():
    group = meshes(3, streams=2)
    # member k sends member j (10 k + j) repeated j + k times: sizes differ, and 0 -> 0 is empty
    got = in_threads(lambda k: group[k].alltoall([bytes([10 * k + j]) * (j + k) for j in range(3)], 1), 3)
    assert got == [[bytes([10 * k + j]) * (j + k) for k in range(3)] for j in range(3)]


@pytest.mark.timeout(60)
def test_another_group_or_round_or_size_is_refused():
    opened = meshes(2, members=[[1, 2], [1, 3]])
    assert all(isinstance(e, TransportError) and "group" in str(e) for e in opened)
    group = meshes(2)
    got = in_threads(lambda k: group[k].allreduce_sum(torch.ones(4), 5 + k), 2)
    assert all(isinstance(e, TransportError) and "round" in str(e) for e in got)
    assert all(m.closed for m in group)  # an error closes the mesh: the next call raises at once
    with pytest.raises(TransportError, match="closed"):
        group[0].allreduce_sum(torch.ones(4), 6)
    group = meshes(2, small_bytes=0)
    got = in_threads(lambda k: group[k].allreduce_sum(torch.ones(100 + k), 1), 2)
    assert all(isinstance(e, TransportError) for e in got)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="streams"):
        TransportConfig(streams=0)
    with pytest.raises(ConfigError, match="timeout_s"):
        TransportConfig(timeout_s=0)
    assert window_for(100, 100, 4) == 312_500 and window_for(1, 1, 4) == 65536


class Workers:
    """``world`` collective_worker processes (tenacia backend), on loopback or in lab nodes."""

    def __init__(self, world: int, timeout_s: float, lab: LinkLab | None = None):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.procs = []
        for k in range(world):
            host = lab.nodes[k].address if lab else "127.0.0.1"
            argv = [sys.executable, WORKER, "--rank", str(k), "--world", str(world), "--host", host,
                    "--backend", "tenacia", "--streams", "3", "--timeout", str(timeout_s)]
            kw = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            self.procs.append(lab.popen(k, argv, **kw) if lab else
                              subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_parent, **kw))
        hosts = [lab.nodes[k].address if lab else "127.0.0.1" for k in range(world)]
        ports = [self.line(p, 60).split()[1] for p in self.procs]
        self.tell(self.procs, "peers " + ",".join(f"{h}:{p}" for h, p in zip(hosts, ports, strict=True)))
        assert all(self.line(p, 60).strip() == "ready" for p in self.procs)

    @staticmethod
    def line(proc: subprocess.Popen, timeout: float) -> str:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        assert ready, f"a worker said nothing in {timeout}s"
        return proc.stdout.readline()

    @staticmethod
    def tell(procs: list[subprocess.Popen], line: str) -> None:
        for p in procs:
            p.stdin.write(line + "\n")
            p.stdin.flush()

    def ask(self, command: str, procs: list[subprocess.Popen] | None = None, timeout: float = 60) -> list[dict]:
        procs = procs or self.procs
        self.tell(procs, command)
        return [json.loads(self.line(p, timeout)) for p in procs]

    def close(self) -> None:
        for p in self.procs:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            p.wait(10)


@pytest.fixture
def workers():
    made: list[Workers] = []
    yield lambda *a, **kw: made.append(Workers(*a, **kw)) or made[-1]
    for w in made:
        w.close()


def check_exact(answers: list[dict]) -> None:
    assert all(a.get("exact") for a in answers), answers
    assert len({a["sha256"] for a in answers}) == 1


@pytest.mark.timeout(60)
def test_a_peer_that_stops_answering_makes_the_call_raise_at_the_timeout():
    group = meshes(3, timeout_s=1.0)
    got = in_threads(lambda k: group[k].allreduce_sum(torch.ones(8), 1) if k < 2 else None, 3)
    assert all(isinstance(e, TransportError) and "did not complete it in time" in str(e) and "[9]" in str(e)
               for e in got[:2]), got  # member id 9 is rank 2


@pytest.mark.timeout(120)
def test_processes_on_loopback_agree_bit_for_bit_then_a_killed_peer_makes_the_call_raise(workers):
    w = workers(3, timeout_s=100)  # far above the test's limits: only the closed streams can end the last call
    check_exact(w.ask("allreduce 1024 3 1"))
    check_exact(w.ask("allreduce 4000000 2 2"))
    assert all(a["ok"] for a in w.ask("allgather 5000 2"))
    survivors, victim = w.procs[:2], w.procs[2]
    w.tell(survivors, "allreduce 8000000 1")
    os.killpg(victim.pid, signal.SIGKILL)
    answers = [json.loads(w.line(p, 60)) for p in survivors]
    assert all("TransportError" in a.get("error", "") for a in answers), answers
    # the first to notice names the dead member; it closes its mesh, so the other may notice it first
    assert any("member 2" in a["error"] for a in answers), answers


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_sigstopped_peer_makes_the_call_raise_at_the_timeout(workers):
    w = workers(3, timeout_s=3)
    os.killpg(w.procs[2].pid, signal.SIGSTOP)
    answers = w.ask("allreduce 1024 1", procs=w.procs[:2], timeout=60)
    assert all("did not complete it in time" in a.get("error", "") and "[2]" in a["error"] for a in answers), answers


@pytest.mark.timeout(120)
@pytest.mark.skipif(not NETNS_OK, reason=f"network namespaces: {NETNS_WHY}")
def test_across_a_lab_link_with_delay(workers):
    with LinkLab(nodes=4, link="tun", delay_ms=10.0) as lab:
        w = workers(4, timeout_s=60, lab=lab)
        small = w.ask("allreduce 1024 5 3")
        check_exact(small)
        assert min(a["median_s"] for a in small) >= 0.5 * 0.020  # a small collective crosses the link once
        check_exact(w.ask("allreduce 2000000 1 4"))
        w.close()
