"""The warm spare warms up once and forks a ready replica per order: a real spare process, real
fork, real pipes. Each child is its own session, logs where it was told, holds the spare's
trainer, and its exit code comes back through the spare's reports; the spare stays for the next
order, and a child whose spare is killed dies with it."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tenacia import config
from tenacia.process import die_with_parent
from tenacia.train.config import RunConfig
from tenacia.train.replicas.forked import KILLED, REPORT_ENV, SpareProcess

from ...integration.procs import SMALL

pytestmark = pytest.mark.timeout(120)

# the spare, as `tenacia replica` runs it; a forked child reports what it got, then lives on
# until told to exit with a code (a file appears) or forever
SPARE = """
import json, os, sys, time
from tenacia import config
from tenacia.train.config import RunConfig
from tenacia.train.replicas.spare import wait_as_spare
cfg = config.load(RunConfig, sys.argv[1])
replica, join, trainer = wait_as_spare(cfg)
print(json.dumps({"replica": replica, "join": join, "pid": os.getpid(), "ppid": os.getppid(),
                  "sid": os.getsid(0), "step": trainer.step}), flush=True)
stop = sys.argv[2] + f".{replica}"
while not os.path.exists(stop):
    time.sleep(0.02)
raise SystemExit(int(open(stop).read()))
"""


def test_one_warm_up_then_a_ready_replica_per_order(tmp_path):
    cfg = config.load(RunConfig, None, [*SMALL, f'train.run_dir="{tmp_path}"'])
    path = tmp_path / "config.toml"
    path.write_text(config.dumps_toml(cfg))
    report_r, report_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", SPARE, str(path), str(tmp_path / "stop")], stdin=subprocess.PIPE,
                            env={**os.environ, REPORT_ENV: str(report_w)}, pass_fds=(report_w,),
                            start_new_session=True, preexec_fn=die_with_parent)
    os.close(report_w)
    spare = SpareProcess(proc, report_r, 0.01)
    try:
        assert spare.ready.wait(90), "the spare never warmed up"
        first = spare.fork(1, ["h:1"], tmp_path / "r1.log")
        second = spare.fork(2, [], tmp_path / "r2.log")
        for child, replica in ((first, 1), (second, 2)):
            deadline = time.monotonic() + 30
            log = tmp_path / f"r{replica}.log"
            while child.pid is None or not log.exists() or not log.read_text():
                assert time.monotonic() < deadline and child.poll() is None
                time.sleep(0.02)
            got = json.loads((tmp_path / f"r{replica}.log").read_text().splitlines()[0])
            assert got["replica"] == replica and got["pid"] == child.pid and got["ppid"] == proc.pid
            assert got["sid"] == child.pid  # a session of its own: the launcher signals its group
        assert json.loads((tmp_path / "r1.log").read_text())["join"] == ["h:1"]
        (tmp_path / "stop.1").write_text("7")
        assert first.wait(timeout=30) == 7  # reported by the spare, which stays
        assert second.poll() is None and spare.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)  # the spare dies: its children die with it
        assert second.wait(timeout=30) == KILLED
    finally:
        proc.kill()
        proc.wait(timeout=10)
