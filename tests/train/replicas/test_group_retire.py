"""Old quorums' gloo groups are released: retiring them never blocks the caller, even with a
collective in flight against a stopped peer, and frees their TCP loop threads once it can."""

import os
import signal
import subprocess
import sys
import time
import types
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tenacia.train.replicas.group import GroupBuilder
from tenacia.train.replicas.replica import Replica

ROOT = Path(__file__).resolve().parents[2]
PEER = """
import sys, time, torch
from tenacia.train.replicas.group import GroupBuilder
addr, n = sys.argv[1], int(sys.argv[2])
for qid in range(1, n + 1):
    b = GroupBuilder(addr, qid, 1, 2, "127.0.0.1")
    b.done.wait(30)
    assert b.error is None, b.error
    if qid < n:  # the newest quorum's all-reduce is left hanging: this peer then stops
        b.pg.allreduce([torch.ones(8)]).wait()
print("ready", flush=True)
time.sleep(120)
"""


def loop_threads() -> int:
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            n += open(f"/proc/self/task/{tid}/comm").read().strip() == "gloo_tcp_loop"
        except OSError:
            pass
    return n


@pytest.mark.timeout(90)
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_retired_groups_release_their_threads_without_blocking():
    base = loop_threads()
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=30))
    addr, n = f"127.0.0.1:{store.port}", 4
    peer = subprocess.Popen([sys.executable, "-c", PEER, addr, str(n)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        groups = {}
        for qid in range(1, n + 1):
            groups[qid] = b = GroupBuilder(addr, qid, 0, 2, "127.0.0.1")
            assert b.done.wait(30) and b.error is None, b.error
            if qid < n:
                b.pg.allreduce([torch.ones(8)]).wait()
        assert peer.stdout.readline().strip() == "ready"
        # the newest group's collective stays in flight: the peer never joins it
        work = groups[n].pg.allreduce([torch.ones(1 << 20)])
        time.sleep(0.2)
        assert not work.is_completed()
        assert loop_threads() - base >= n  # one TCP loop per group, at least

        holder = types.SimpleNamespace(groups=groups)
        t0 = time.monotonic()
        Replica.retire_groups(holder, n + 1)  # the next quorum starts: every older group goes
        assert time.monotonic() - t0 < 0.5, "retiring must not block on the collective in flight"
        assert groups == {}

        deadline = time.monotonic() + 10
        while loop_threads() > base + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loop_threads() <= base + 1  # the older groups are gone; the last waits on its peer

        peer.send_signal(signal.SIGKILL)  # the abandoned collective now fails...
        peer.wait(10)
        with pytest.raises(RuntimeError):  # gloo raises DistBackendError, a RuntimeError
            work.wait()
        del work  # ...and once its work is dropped too (a Work keeps its group alive), the group goes
        deadline = time.monotonic() + 15
        while loop_threads() > base and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loop_threads() == base
    finally:
        peer.kill()
        peer.wait(10)
