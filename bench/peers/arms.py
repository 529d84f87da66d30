"""Running one arm of bench/faults.py: start its processes, wait until every replica commits,
inject the schedule's faults from the outside (SIGKILL, SIGSTOP then SIGCONT of a worker pid),
keep replacing dead replicas where the arm has no launcher of its own, stop everything at the
end, and hand the records to ``analyze``.

Every process started here gets its own session and a parent-death SIGKILL; ``Procs.stop``
kills each session and every worker pid the records name (torchrun puts its workers in sessions
of their own).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacia.chaos.netns import child_setup, kill_group


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float  # seconds after every replica first committed a step
    kind: str  # "kill" or "hang"
    replica: int
    seconds: float = 0.0  # how long a hang lasts


def schedule(duration_s: float, replicas: int, crash_every_s: float, hang_every_s: float,
             hang_s: float) -> list[Fault]:
    """A crash every ``crash_every_s`` and a hang every ``hang_every_s`` (15 s before the crash it
    would meet), replicas taken in turn from 1."""
    times = [(k * crash_every_s, "kill") for k in range(1, int(duration_s // crash_every_s) + 1)
             if k * crash_every_s < duration_s]
    times += [(k * hang_every_s - 15.0, "hang") for k in range(1, int(duration_s // hang_every_s) + 1)
              if k * hang_every_s - 15.0 < duration_s]
    times.sort()
    return [Fault(t, kind, (i + 1) % replicas, hang_s if kind == "hang" else 0.0)
            for i, (t, kind) in enumerate(times)]


def records(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Procs:
    """The processes of one arm."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.out_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=child_setup)
        log.close()
        self.started.append(proc)
        return proc

    def stop(self, worker_log: Path | None = None, pids: list[int] = ()) -> None:
        """SIGKILL every session started here, every worker the log names and ``pids``."""
        for proc in self.started:
            kill_group(proc)
        named = [r["pid"] for r in records(worker_log) if r.get("event") == "worker_started"] if worker_log else []
        for pid in [*named, *pids]:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def wait_full(poll, replicas: int, timeout_s: float, procs: Procs) -> float:
    """Time of the first step every replica committed; ``poll()`` returns (t, members) pairs."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for t, members in poll():
            if len(members) >= replicas:
                return t
        if procs.started and all(p.poll() is not None for p in procs.started):
            raise RuntimeError("every process of the arm exited before training started")
        time.sleep(0.2)
    raise TimeoutError(f"no step committed by all {replicas} replicas within {timeout_s:.0f} s")


def peer_commits(worker_log: Path):
    def poll() -> list[tuple[float, list[int]]]:
        by_step: dict[int, list[dict]] = {}
        for r in records(worker_log):
            if r.get("event") == "worker_step" and r["committed"]:
                by_step.setdefault(r["step"], []).append(r)
        return [(max(x["t"] for x in rs), sorted({x["replica"] for x in rs})) for _, rs in sorted(by_step.items())]
    return poll


def worker_pids(worker_log: Path) -> Callable[[int], int | None]:
    """A peer replica's current pid: the last one its worker log announced, if alive."""
    def pid_of(replica: int) -> int | None:
        pids = [r["pid"] for r in records(worker_log) if r.get("event") == "worker_started" and r["replica"] == replica]
        return pids[-1] if pids and alive(pids[-1]) else None
    return pid_of


def tenacia_pids(run_dir: Path) -> Callable[[int], int | None]:
    """A tenacia replica's current pid, as it publishes it in ``replicas/r<k>.json``."""
    def pid_of(replica: int) -> int | None:
        try:
            pid = json.loads((run_dir / "replicas" / f"r{replica}.json").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None
        return pid if alive(pid) else None
    return pid_of


class Injector(threading.Thread):
    """Sends ``faults`` to the current pid of each target replica (``pid_of``)."""

    def __init__(self, faults: list[Fault], t0: float, pid_of: Callable[[int], int | None]):
        super().__init__(daemon=True, name="injector")
        self.faults, self.t0, self.pid_of = faults, t0, pid_of
        self.done = threading.Event()
        self.injections: list[dict[str, Any]] = []
        self.timers: list[threading.Timer] = []

    def run(self) -> None:
        for f in self.faults:
            if self.done.wait(max(0.0, self.t0 + f.at_s - time.time())):
                return
            pid = self.pid_of(f.replica)
            if pid is None:
                self.injections.append({"t": time.time(), "kind": f.kind, "replica": f.replica, "skipped": True})
                continue
            t = time.time()
            if f.kind == "kill":
                os.kill(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGSTOP)
                timer = threading.Timer(f.seconds, _cont, args=(pid,))
                timer.start()
                self.timers.append(timer)
            self.injections.append({"t": t, "kind": f.kind, "replica": f.replica, "pid": pid,
                                    "params": {"seconds": f.seconds} if f.kind == "hang" else {}})

    def stop(self) -> None:
        self.done.set()
        for timer in self.timers:
            timer.cancel()
        for inj in self.injections:
            if inj["kind"] == "hang" and inj.get("pid"):
                _cont(inj["pid"])


def _cont(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def lighthouse_port(log_path: Path, timeout_s: float = 30) -> int:
    """The port torchft's lighthouse printed ('Lighthouse listening on: http://host:PORT')."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        m = re.search(r"listening on: \S+:(\d+)", log_path.read_text(errors="replace") if log_path.exists() else "")
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise TimeoutError(f"torchft_lighthouse did not say its port in {log_path}")
