"""The launcher's side of the warm spare (``spare.py``): ordering a fork, and supervising a replica
that is the spare's child, not the launcher's.

``SpareProcess`` wraps the spare's ``Popen`` and reads its reports (``ready``, ``forked``,
``exited``) in a thread. ``fork(replica, join, log)`` sends an order and returns a
``ForkedReplica`` at once: a stand-in for ``subprocess.Popen`` with ``pid`` (None until the spare
reports it), ``poll``, ``returncode`` and ``wait``, so supervision treats it like any replica
process. Its exit code comes from the spare's report; if the spare itself is gone, so is the
replica (it is killed with the spare), and ``poll`` says -9 once no process has its pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from ...process import alive

REPORT_ENV = "TENACIA_SPARE_REPORT"  # names the fd of the pipe the spare writes its reports to
KILLED = -9  # a forked replica whose spare died: killed with it (parent-death signal)


class SpareProcess:
    def __init__(self, proc: subprocess.Popen, report_fd: int, poll_s: float):
        self.proc, self.pid, self.poll_s = proc, proc.pid, poll_s
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._pids: dict[int, int] = {}  # replica -> pid of its forked process
        self._codes: dict[int, int] = {}  # pid -> exit code
        self.orders = 0
        threading.Thread(target=self._read, args=(os.fdopen(report_fd, "rb"),), name="spare-reports",
                         daemon=True).start()

    def _read(self, stream) -> None:
        for raw in stream:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._lock:
                if "ready" in msg:
                    self.ready.set()
                elif "forked" in msg:
                    self._pids[int(msg["forked"])] = int(msg["pid"])
                elif "exited" in msg:
                    self._codes[int(msg["exited"])] = int(msg["code"])

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout=timeout)

    def fork(self, replica: int, join: list[str], log: Path, slot: int | None = None) -> ForkedReplica:
        """Order replica ``replica`` on device slot ``slot`` (default: the replica id; raises
        ``OSError`` when the spare cannot be told)."""
        with self._lock:
            self._pids.pop(replica, None)
        self.proc.stdin.write((json.dumps({"replica": replica, "join": join, "log": str(log),
                                          "slot": replica if slot is None else slot}) + "\n").encode())
        self.proc.stdin.flush()
        self.orders += 1
        return ForkedReplica(self, replica)

    def pid_of(self, replica: int) -> int | None:
        with self._lock:
            return self._pids.get(replica)

    def code_of(self, pid: int) -> int | None:
        with self._lock:
            return self._codes.get(pid)


class ForkedReplica:
    """A replica forked by the spare, supervised like a ``Popen`` (module docstring)."""

    def __init__(self, spare: SpareProcess, replica: int):
        self.spare, self.replica = spare, replica
        self.returncode: int | None = None

    @property
    def pid(self) -> int | None:
        return self.spare.pid_of(self.replica)

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        pid = self.pid
        code = self.spare.code_of(pid) if pid is not None else None
        if code is None and self.spare.poll() is not None and not alive(pid):
            code = KILLED
        self.returncode = code
        return code

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"replica {self.replica} (forked)", timeout)
            time.sleep(self.spare.poll_s)
        return self.returncode
