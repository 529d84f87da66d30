"""bench/serve_servers.py: no server a serving bench starts outlives it. A driver (as
bench/serve.py runs its servers) starts a stand-in server whose child ignores SIGTERM (as an
engine process still loading does); however the driver ends (an error, SIGTERM as from
``timeout``, Ctrl-C), the server and its child are gone; a driver killed outright takes its
server with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tenacia.process import alive

ROOT = Path(__file__).resolve().parents[2]

# The stand-in server: a child that ignores SIGTERM, its pid printed, then both wait.
SERVER = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""

# The driver takes Ctrl-C as an interactive bench does, whatever it inherited: a shell that starts
# a job in the background without job control (`nohup make test &`) leaves SIGINT ignored, and
# Python then keeps it ignored, so the SIGINT case would wait out its timeout.
DRIVER = """
import os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, os.path.join(sys.argv[1], "bench"))
from serve_servers import Server, stopping_all
log = Path(sys.argv[2])
with stopping_all():
    server = Server([sys.executable, "-c", sys.argv[3]], dict(os.environ), log)
    while not log.read_text().strip():
        time.sleep(0.05)
    print(server.proc.pid, log.read_text().strip(), flush=True)
    if sys.argv[4] == "raise":
        raise RuntimeError("the bench failed")
    time.sleep(120)
"""


def gone(pid: int, within_s: float = 20.0) -> bool:
    deadline = time.monotonic() + within_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("end", ["raise", "SIGTERM", "SIGINT", "SIGKILL"])
def test_no_server_outlives_the_bench(tmp_path, end):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(ROOT), str(tmp_path / "server.log"), SERVER, end],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    server, child = (int(pid) for pid in driver.stdout.readline().split())
    try:
        if end != "raise":
            os.kill(driver.pid, getattr(signal, end))
        driver.wait(60)
        assert gone(server), "the server outlived the bench"
        if end == "SIGKILL":  # no clean-up ran: the server died with its parent, its own child lives on
            assert alive(child)
        else:
            assert gone(child), "the server's child outlived the bench"
            assert driver.returncode != 0
    finally:
        for pid in (server, child):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if driver.poll() is None:
            driver.kill()
