"""Runs a run's ``[chaos]`` schedule (``tenacia.faults``) against real processes, with real signals.

It is a supervision plug-in of the launcher (``tenacia.train.replicas.launcher.Supervision``):
the launcher calls ``tick`` every ``poll_s`` and starts every replica process with ``child_env``,
which arms in-process kill points there (``killpoints``). It follows the run by tailing
``events.jsonl`` (committed steps, the current leader, healing) and fires each fault once its
step is committed. Every fault is logged as ``fault_injected`` with the time it was sent, which
the report uses to measure detection and stall. CPU quotas (``cpu_quotas``, ``cpu:R@S:C``) hold a
replica id's processes to a number of CPUs through a cgroup (``cpuquota``); every tick places a
replica's new process (a restart, a fork from the spare) in its id's cgroup.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..events import EventLog, EventTail
from ..faults import Fault, process_faults
from . import killpoints

SLOW_PERIOD_S = 0.1  # one SIGSTOP/SIGCONT cycle of a slowed replica


def send(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def freeze_for(pid: int, seconds: float) -> threading.Timer:
    """SIGSTOP now, SIGCONT after ``seconds`` (from a timer thread)."""
    send(pid, signal.SIGSTOP)
    timer = threading.Timer(seconds, send, args=(pid, signal.SIGCONT))
    timer.daemon = True
    timer.start()
    return timer


class Slowdown(threading.Thread):
    """Runs a process ``factor`` times slower: stopped for (1 - 1/factor) of every period.

    ``cycles`` counts the stops that reached a live process and ``stopped_s`` their measured
    length (monotonic clock, SIGSTOP to SIGCONT): the proof that the slowdown happened, which the
    injector logs when it ends (``slow_ended``), so a test need not infer it from step times.
    """

    def __init__(self, pid_of: Callable[[], int | None], factor: float):
        super().__init__(daemon=True, name="chaos-slow")
        self.pid_of, self.factor, self.stopped = pid_of, factor, threading.Event()
        self.cycles, self.stopped_s = 0, 0.0

    def run(self) -> None:
        run_s = SLOW_PERIOD_S / self.factor
        while not self.stopped.is_set():
            pid = self.pid_of()
            if pid is not None and self.factor > 1 and send(pid, signal.SIGSTOP):
                t = time.monotonic()
                time.sleep(SLOW_PERIOD_S - run_s)
                send(pid, signal.SIGCONT)
                self.cycles += 1
                self.stopped_s += time.monotonic() - t
            time.sleep(run_s)


def random_kills(rate_per_s: float, duration_s: float, replicas: int, seed: int) -> list[tuple[float, int]]:
    """(time offset, replica) of Poisson kills: the same list for the same seed on every machine."""
    rng = random.Random(seed)
    out, t = [], 0.0
    while rate_per_s > 0:
        t += rng.expovariate(rate_per_s)
        if t >= duration_s:
            break
        out.append((t, rng.randrange(replicas)))
    return out


class ChaosInjector:
    def __init__(self, cfg, run_dir: Path, events: EventLog, pid_of: Callable[[int], int | None]):
        chaos = cfg.chaos
        self.events = EventLog(events.path, "chaos")
        self.pid_of = pid_of
        self.faults: list[Fault] = process_faults(chaos)  # wrong numbers are in-process: chaos.sdc
        self.kill_point = chaos.kill_at
        for f in self.faults:
            if f.kind == "kill_checkpoint":  # in-process: the leader kills itself mid-write
                self.kill_point = f"checkpoint:model.safetensors@{f.step}"
        first = cfg.replicas.first_id
        self.random = [(t, first + r) for t, r in
                       random_kills(chaos.kill_rate, chaos.kill_rate_duration_s, cfg.replicas.count, chaos.seed)]
        self.tail = EventTail(run_dir / "events.jsonl")
        self.step, self.leader = 0, 0
        self.t0: float | None = None  # kill_rate's clock: starts at the first committed step
        self.arm_healing = False
        self._timers: list[threading.Timer] = []
        self._frozen: list[tuple[int, int]] = []  # (pid, step whose commit sends SIGCONT): hang:R@S:+N
        self._slow: list[tuple[int, Slowdown]] = []  # (replica id, its slowdown)
        self.quotas, self._placed = self._open_quotas(chaos, first), {}

    def _open_quotas(self, chaos, first: int):
        """The cgroups for ``cpu_quotas`` and ``cpu:`` faults, or None when the run asks for none."""
        if not any(chaos.cpu_quotas) and not any(f.kind == "cpu" for f in self.faults):
            return None
        from .cpuquota import CpuQuotas, available

        why = available()
        if why is not None:
            raise RuntimeError(f"chaos.cpu_quotas / cpu: faults need cgroup CPU quotas here: {why}")
        quotas = CpuQuotas()
        for i, cores in enumerate(chaos.cpu_quotas):
            if cores > 0:  # 0: this id runs unlimited until a cpu: fault says otherwise
                quotas.set(first + i, cores)
        return quotas

    @property
    def poll_s(self) -> float:
        """A kill_healing fault must land inside a heal (tens of ms on a small model): the
        launcher ticks every 5 ms while one is armed, else every 50 ms."""
        return 0.005 if self.arm_healing else 0.05

    def child_env(self) -> dict[str, str]:
        """Environment for a replica process: its armed in-process kill point, if any."""
        return {killpoints.ENV_VAR: self.kill_point} if self.kill_point else {}

    def _place(self) -> None:
        for replica in self.quotas.groups:
            pid = self.pid_of(replica)
            if pid is not None and self._placed.get(replica) != pid and self.quotas.place(replica, pid):
                self._placed[replica] = pid
                self.events.emit("cpu_quota", step=self.step, replica=replica, pid=pid,
                                 cpus=self.quotas.cores[replica])

    def tick(self) -> None:
        if self.quotas is not None:
            self._place()
        for e in self.tail.new():
            if e["event"] == "step_committed" and e.get("step"):
                self.step = max(self.step, e["step"])
                if self.t0 is None:
                    self.t0 = time.monotonic()
            elif e["event"] == "coordinator_changed":
                self.leader = e["coordinator"]
            elif e["event"] == "heal_started" and self.arm_healing:
                self.arm_healing = False
                self.fire(Fault("kill", self.step, e["replica"]), why="kill_healing")
        for f in [f for f in self.faults if f.step <= self.step]:
            self.faults.remove(f)
            if f.kind == "kill_coordinator":
                self.fire(Fault("kill", f.step, self.leader), why="kill_coordinator")
            elif f.kind == "kill_healing":
                self.arm_healing = True
            elif f.kind != "kill_checkpoint":
                self.fire(f)
        for pid, until in [x for x in self._frozen if x[1] <= self.step]:
            self._frozen.remove((pid, until))
            send(pid, signal.SIGCONT)
        elapsed = -1.0 if self.t0 is None else time.monotonic() - self.t0
        while self.random and self.random[0][0] <= elapsed:
            _, replica = self.random.pop(0)
            self.fire(Fault("kill", self.step, replica), why="kill_rate")

    def fire(self, f: Fault, why: str | None = None) -> None:
        pid = self.pid_of(f.replica)
        if f.kind == "cpu":  # the slot's quota holds for its later processes too
            self.quotas.set(f.replica, f.param)
            self._placed.pop(f.replica, None)
            self._place()
        if pid is None:
            return
        # logged before the signal is sent: a kill is detected within milliseconds, and the
        # detection must never carry an earlier time than the fault it detects
        self.events.emit("fault_injected", step=self.step, kind=why or f.kind, replica=f.replica,
                         params={"spec": f.spec, "pid": pid})
        if f.kind == "kill":
            send(pid, signal.SIGKILL)
        elif f.kind == "hang" and f.resume_after is not None:
            send(pid, signal.SIGSTOP)
            self._frozen.append((pid, f.step + f.resume_after))
        elif f.kind == "hang":
            self._timers.append(freeze_for(pid, f.param))
        elif f.kind == "slow":
            s = Slowdown(lambda r=f.replica: self.pid_of(r), f.param)
            s.start()
            self._slow.append((f.replica, s))

    def close(self) -> None:
        if self.quotas is not None:
            self.quotas.close()
        for replica, s in self._slow:
            s.stopped.set()
            s.join(timeout=2 * SLOW_PERIOD_S)  # its last stop ends with a SIGCONT before it is counted
            self.events.emit("slow_ended", step=self.step, replica=replica, cycles=s.cycles,
                             stopped_s=round(s.stopped_s, 3), factor=s.factor)
        self._slow.clear()
        for t in self._timers:
            t.cancel()
        for pid, _ in self._frozen:  # the run ended without the step: the process must not stay stopped
            send(pid, signal.SIGCONT)
        self._frozen.clear()
