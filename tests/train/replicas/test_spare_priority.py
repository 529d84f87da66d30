"""A warm spare warms up under SCHED_IDLE and trains at normal priority once it is given an id."""

import os
import subprocess
import sys

import pytest

from tenacia.train.replicas.launcher import (
    _idle_and_die_with_parent,
    can_leave_idle,
    to_normal_priority,
)

CHILD = """
import sys, threading, time
threads = [threading.Thread(target=time.sleep, args=(60,), daemon=True) for _ in range(3)]
for t in threads:
    t.start()
print("ready", flush=True)
sys.stdin.readline()
"""


def policies(pid: int) -> set[int]:
    return {os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def autogroup_nice(pid: int) -> int | None:
    """``/proc/PID/autogroup`` reads ``/autogroup-N nice K``; None without autogroup scheduling."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return int(f.read().split()[-1])
    except OSError:
        return None


@pytest.mark.skipif(not can_leave_idle(), reason="needs CAP_SYS_NICE or RLIMIT_NICE >= 20")
def test_spare_threads_are_idle_until_activated_then_all_normal():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             preexec_fn=_idle_and_die_with_parent, start_new_session=True)
    try:
        assert child.stdout.readline() == b"ready\n"
        assert len(os.listdir(f"/proc/{child.pid}/task")) >= 4
        assert policies(child.pid) == {os.SCHED_IDLE}  # threads inherit the policy
        assert autogroup_nice(child.pid) in (None, 19)  # its session's group weighs almost nothing
        to_normal_priority(child.pid)
        assert policies(child.pid) == {os.SCHED_OTHER}
        assert autogroup_nice(child.pid) in (None, 0)
    finally:
        child.kill()
        child.wait(timeout=10)


def test_to_normal_priority_of_a_gone_process_is_a_no_op():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    to_normal_priority(child.pid)
