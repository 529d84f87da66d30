"""Chips of different speeds: cgroup CPU quotas on real processes (root and a cpu controller needed).

The quota's effect is read from the kernel's own counters (throttled periods, the process's CPU
time), never from a wall time: a 0.1-CPU quota on a busy loop must keep it under 0.5 CPU (5x)."""

import os
import subprocess
import sys
import time

import pytest

from tenacia import config
from tenacia.chaos import cpuquota
from tenacia.faults import Fault, parse_fault
from tenacia.train.config import RunConfig

needs_quotas = pytest.mark.skipif(cpuquota.available() is not None, reason=str(cpuquota.available()))
BURN = "import time\nwhile True:\n    pass\n"


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.fixture
def burner():
    proc = subprocess.Popen([sys.executable, "-c", BURN])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_the_entry_and_the_field_parse_with_clear_errors():
    assert parse_fault("cpu:2@30:0.25") == Fault("cpu", 30, 2, 0.25)
    cfg = config.load(RunConfig, None, ["chaos.cpu_quotas=[0.5, 0.5, 0.25, 0.125]"])
    assert cfg.chaos.cpu_quotas == [0.5, 0.5, 0.25, 0.125] and cfg.chaos.any
    with pytest.raises(config.ConfigError) as e:
        config.load(RunConfig, None, ["chaos.cpu_quotas=[0.5, -1]"])
    assert e.value.field == "chaos.cpu_quotas[1]" and ">= 0" in str(e.value)
    with pytest.raises(config.ConfigError, match="needs ':value'"):
        parse_fault("cpu:1@3")


@needs_quotas
def test_a_quota_throttles_a_busy_process_and_is_removed_on_close(burner):
    quotas = cpuquota.CpuQuotas()
    try:
        quotas.set(7, 0.1)
        assert quotas.place(7, burner.pid) and quotas.pids(7) == [burner.pid]
        start, t0 = cpu_seconds(burner.pid), time.monotonic()
        time.sleep(1.5)
        used = (cpu_seconds(burner.pid) - start) / (time.monotonic() - t0)
        assert quotas.throttled(7) > 0 and used < 0.5, (quotas.throttled(7), used)
        quotas.set(7, 0)  # lifted live: no more throttling
        before = quotas.throttled(7)
        time.sleep(0.5)
        assert quotas.throttled(7) == before
        path = quotas.groups[7]
    finally:
        quotas.close()
    assert not path.exists() and burner.poll() is None  # the process lives on, in the root cgroup


@needs_quotas
def test_placing_a_process_that_is_gone_says_so():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    quotas = cpuquota.CpuQuotas()
    try:
        assert quotas.place(0, gone.pid) is False and quotas.pids(0) == []
    finally:
        quotas.close()


@needs_quotas
def test_stale_groups_of_a_dead_owner_are_removed(burner):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    root = cpuquota.CpuQuotas().root
    stale = root / f"tn-{dead.pid}-r0"
    stale.mkdir()
    (stale / "cgroup.procs").write_text(str(burner.pid))
    quotas = cpuquota.CpuQuotas()  # every new owner sweeps the dead ones' groups
    quotas.close()
    assert not stale.exists() and burner.poll() is None
