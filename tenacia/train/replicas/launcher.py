"""The launcher: starts this host's replica processes, restarts the ones that die, runs its plug-ins.

It holds no training state and takes no part in coordination: if it dies, its replicas die with
it (parent-death signal) and the replicas on other hosts go on without them. Each replica runs in
its own session, so a signal meant for one never reaches another.

Supervision contract: a replica that exits non-zero is restarted after ``restart_backoff_s``,
doubling per consecutive failure of that replica (capped at ``Timing.restart_backoff_max_s``),
while the run's restart budget lasts; one evicted for wrong numbers (``device_slot.EXIT_EVICTED``)
is restarted at once on a device slot never used before, its old slot banned for the run. It rejoins through the control address of any live replica
and heals from a peer. Once the budget is spent, a replica that exits non-zero is left dead and
``restart_budget_exhausted`` is logged once for it. When the leader writes ``finished.json``
nothing is restarted any more, nor once any replica of this host exited 0 (a replica exits 0 only
after the leader's final stop, or finding the job over: a peer that fails then, the leader among
them before it wrote ``finished.json``, would come back with nobody to join and train again from
its checkpoint or step 0), and a replica still alive ``Timing.after_finish_s`` later (one
frozen through the finish and never continued) is stopped as on SIGTERM, so the launcher ends. ``supervise_once(now)`` is one look at the children, so these rules
can be driven with a fake clock.

Stopping: on SIGTERM the launcher stops this host's replicas cleanly: its plug-ins are closed,
every replica process (and the spare) is sent SIGCONT and SIGTERM, killed if still alive after
``Timing.exit_grace_s``, and reaped; ``launcher_stopped`` is logged and the launcher exits with
code 143 (128 + SIGTERM). A second SIGTERM meanwhile is ignored. Replicas on other hosts see this
host's replicas crash and go on; a job stopped whole resumes from its newest checkpoint.

Supervision plug-ins (``Supervision``): objects the caller adds to ``Launcher.plugins`` before
``run``. The launcher calls each one's ``tick`` at least every ``poll_s`` seconds, starts every
replica process with each one's ``child_env`` added to its environment, and ``close``s them at
the end. ``tenacia train`` adds the chaos injector this way; the launcher knows nothing of it.

Placement (``placement.py``): the caller may say, through the environment, under which command
prefix, environment and config overrides each replica process runs (``tenacia chaos link`` puts
each in a network namespace of its own); the launcher applies it and keeps no spare then.

Warm spare (``spare.py``, ``forked.py``): one process, started first, that imports torch, builds
the model and loads the data once, then forks this host's first replicas and a ready replica for
each replacement, and stays for the next one (one warm-up instead of one per replica: on 2 cores
three replicas and a spare warming up side by side took 9.5 s to the first step). Its warm-up runs at normal priority, once per job: at idle priority
(as before) it never ran on a busy host, and the replacement it was for waited for a whole
Python start-up (docs/benchmarks.md, issue 13).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ... import config as cfglib
from ...events import EventLog, read_events
from ...process import die_with_parent
from ...storage import atomic_write
from ..config import RunConfig
from . import addresses
from .device_slot import EXIT_EVICTED, SLOT_ENV
from .forked import REPORT_ENV, SpareProcess
from .monitor import RunMonitor
from .placement import Placement
from .timing import Timing

EXIT_TERMINATED = 128 + signal.SIGTERM  # the launcher's exit code after a SIGTERM


class Terminated(Exception):
    """The launcher was sent SIGTERM."""


class Supervision(Protocol):
    """A plug-in the launcher runs beside its replicas (module docstring)."""

    poll_s: float  # the longest the launcher may wait between two ticks

    def child_env(self) -> dict[str, str]: ...

    def tick(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class Child:
    replica: int
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    failures: int = 0  # consecutive non-zero exits


class Launcher:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.timing = Timing.from_config(cfg.replicas)
        self.run_dir = Path(cfg.train.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(self.run_dir / "events.jsonl", "launcher")
        self.children: dict[int, Child] = {}
        self.spare: subprocess.Popen | None = None  # a warm replica process waiting for an id
        self.restarts = 0
        self.pending: dict[int, float] = {}  # replica -> when to restart it (monotonic)
        self.given_up: set[int] = set()  # replicas left dead once the restart budget was spent
        self.finished_at: float | None = None  # when supervision first saw finished.json
        self.primary = not cfg.replicas.join  # the launcher that starts the job (not one that joins it)
        self.ids = range(cfg.replicas.first_id, cfg.replicas.first_id + cfg.replicas.count)
        # device slot of each replica: its place on this host; an evicted device's slot is never reused
        self.slots = {r: i for i, r in enumerate(self.ids)}
        self.banned: set[int] = set()
        self.config_path = self.run_dir / "replicas" / f"config-{cfg.replicas.first_id}.toml"
        self.plugins: list[Supervision] = []
        self.placement = Placement.from_env()  # where each replica process runs (placement.py)

    def pid_of(self, replica: int) -> int | None:
        c = self.children.get(replica)
        return c.proc.pid if c is not None and c.proc.poll() is None else None

    def addresses(self, exclude: int | None = None) -> list[str]:
        """Control addresses of live replicas, as published in ``replicas/r*.json``."""
        return [info["control"] for info in addresses.read_all(self.run_dir)
                if info["replica"] != exclude and self.pid_of(info["replica"]) == info["pid"]]

    def spawn(self, replica: int | None, join: list[str]) -> Child | SpareProcess:
        """Start replica ``replica``, or the spare (``None``) that forks a replica per order."""
        name = f"r{replica}" if replica is not None else f"spare-{self.restarts}-{time.monotonic_ns()}"
        log = open(self.run_dir / "logs" / f"{name}.log", "ab")
        cmd = [sys.executable, "-m", "tenacia", "replica", "--config", str(self.config_path)]
        if replica is not None:
            cmd += ["--replica", str(replica)]
        for addr in join:
            cmd += ["--join", addr]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.cfg.replica_threads))
        if replica is not None:
            env[SLOT_ENV] = str(self.slots[replica])
        for plugin in self.plugins:
            env.update(plugin.child_env())
        if replica is not None:
            cmd, env = self.placement.command(replica - self.ids[0], cmd, env)
        report_r, report_w = os.pipe() if replica is None else (-1, -1)
        if replica is None:
            env[REPORT_ENV] = str(report_w)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=die_with_parent,
                                stdin=subprocess.PIPE if replica is None else None,
                                pass_fds=(report_w,) if replica is None else ())
        log.close()
        if replica is not None:
            return Child(replica, proc)
        os.close(report_w)
        return SpareProcess(proc, report_r, self.timing.launcher_poll_s)

    def replace(self, replica: int, join: list[str]) -> tuple[Child, str]:
        """A process for replica ``replica``: forked by the warm spare if it is alive (the spare
        stays for the next one), else a new process (and a new spare)."""
        spare = self.spare
        if spare is not None and spare.poll() is None:
            try:
                log = self.run_dir / "logs" / f"r{replica}.log"
                return Child(replica, spare.fork(replica, join, log, self.slots[replica])), "spare"
            except OSError:
                pass
        self.spare = self.spawn(None, []) if self.uses_spare else None
        return self.spawn(replica, join), "new process"

    def wait_address(self, replica: int) -> str:
        timeout = self.timing.start_s
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            child = self.children[replica]
            if child.proc.poll() is not None:
                raise RuntimeError(f"replica {replica} exited with code {child.proc.returncode} while starting; "
                                   f"see {self.run_dir / 'logs' / f'r{replica}.log'}")
            info = addresses.read(self.run_dir, replica)
            if info is not None and info["pid"] == child.proc.pid:
                return info["control"]
            time.sleep(self.timing.launcher_poll_s)
        raise TimeoutError(f"replica {replica} did not publish its address within {timeout:.0f}s")

    def _on_sigterm(self, signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not interrupt the shutdown
        raise Terminated()

    def run(self) -> int:
        """Start this host's replicas and supervise them until the run ends; returns the exit code
        (0: finished, 1: replicas failed for good, ``EXIT_TERMINATED`` after a SIGTERM)."""
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            try:
                code = self._run()
            except Terminated:
                code = EXIT_TERMINATED
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the shutdown runs whole, whatever comes
                self.shutdown()
            if code == EXIT_TERMINATED:
                self.events.emit("launcher_stopped", signal="SIGTERM", restarts=self.restarts)
            return code
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run(self) -> int:
        if not self.uses_spare:  # the spare prepares the data once for all it forks
            from ...data.dataset import prepare_data  # imports torch: only here

            prepare_data(self.cfg.data, self.cfg.model.vocab_size)  # once here, so replicas hit the cache
        self.restore_bans()
        (self.run_dir / "logs").mkdir(exist_ok=True)
        (self.run_dir / "replicas").mkdir(exist_ok=True)
        for r in self.ids:
            addresses.forget(self.run_dir, r)
        if self.primary:
            (self.run_dir / "finished.json").unlink(missing_ok=True)
        atomic_write(self.config_path, cfglib.dumps_toml(self.cfg))
        self.events.emit("run_started", replicas=self.cfg.replicas.count, first_id=self.ids[0],
                         config=cfglib.to_dict(self.cfg))
        seeds = list(self.cfg.replicas.join)
        first_id = self.ids[0]
        if self.uses_spare:  # one warm-up forks every replica, then stays for the replacements
            self.spare = self.spawn(None, [])
        for r in self.ids:  # all at once: each joins replica first_id once it publishes (addresses.resolve)
            join = seeds or ([] if r == first_id else [f"@{first_id}"])
            self.children[r] = self.replace(r, join)[0] if self.uses_spare else self.spawn(r, join)
        self.wait_address(first_id)
        return self.supervise()

    @property
    def uses_spare(self) -> bool:
        """A warm spare is kept unless none is asked for or replicas are placed (placement.py)."""
        return bool(self.cfg.replicas.spares) and not self.placement

    def restore_bans(self) -> None:
        """Slots of this host banned earlier in this run (its event log; a resumed job) stay banned:
        each replica takes its own place unless banned, else the next slot never used."""
        host = socket.gethostname()
        self.banned |= {int(e["slot"]) for e in read_events(self.run_dir / "events.jsonl")
                        if e.get("event") == "device_banned" and e.get("host") == host}
        taken = set(self.banned)
        for r in self.ids:
            slot = self.slots[r]
            while slot in taken:
                slot = max(taken) + 1
            self.slots[r] = slot
            taken.add(slot)

    def evicted(self, replica: int, now: float) -> None:
        """Replica ``replica`` was evicted by name: ban its device slot for the rest of the run and
        restart it at once on the next slot never used (it heals from a peer like any newcomer)."""
        old = self.slots[replica]
        self.banned.add(old)
        self.slots[replica] = max([*self.slots.values(), *self.banned]) + 1
        self.pending[replica] = now
        self.events.emit("device_banned", replica=replica, slot=old, host=socket.gethostname(),
                         replacement_slot=self.slots[replica])

    def finished(self) -> bool:
        return (self.run_dir / "finished.json").exists()

    def run_over(self) -> bool:
        """The job ended: ``finished.json``, or a replica of this host exited 0 (module docstring)."""
        return self.finished() or any(c.proc.poll() == 0 for c in self.children.values())

    def supervise(self) -> int:
        tc = self.cfg.train
        with RunMonitor(self.run_dir, tc.steps, self.cfg.step_samples * self.cfg.data.seq_len, tc.progress,
                        tc.log_every) as monitor:
            while True:
                time.sleep(min([self.timing.launcher_poll_s] + [plugin.poll_s for plugin in self.plugins]))
                for plugin in self.plugins:
                    plugin.tick()
                monitor.tick()
                code = self.supervise_once(time.monotonic())
                if code is not None:
                    return code

    def supervise_once(self, now: float) -> int | None:
        """One look at the children at time ``now`` (monotonic seconds): schedule the restart of
        each that failed, restart those whose backoff is over; the launcher's exit code once none is
        alive nor waiting for a restart, else None."""
        for r, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None or r in self.pending or r in self.given_up:
                continue
            if code == 0 or self.run_over():
                continue
            if code == EXIT_EVICTED:  # its device computes wrong numbers: a replacement on another one
                self.evicted(r, now)
                continue
            if self.restarts >= self.cfg.replicas.restart_budget:
                self.given_up.add(r)
                self.events.emit("restart_budget_exhausted", replica=r, code=code, restarts=self.restarts)
                continue
            child.failures += 1
            backoff = self.timing.restart_backoff(child.failures)
            self.pending[r] = now + backoff
            self.events.emit("replica_exited", replica=r, code=code, backoff_s=backoff)
        for r, at in list(self.pending.items()):
            if self.run_over():  # the job ended during its backoff
                del self.pending[r]
            elif now >= at:
                del self.pending[r]
                self.restarts += 1
                old = self.children[r]
                join = self.addresses(exclude=r) or list(self.cfg.replicas.join)
                self.children[r], how = self.replace(r, join)
                self.children[r].failures = old.failures
                self.events.emit("replica_restarted", replica=r, attempt=self.restarts, join=join, using=how)
        alive = [c for c in self.children.values() if c.proc.poll() is None]
        if alive and self.finished():
            self.finished_at = self.finished_at or now
            if now - self.finished_at > self.timing.after_finish_s:
                self.events.emit("replicas_stopped_after_finish", replicas=sorted(c.replica for c in alive))
                self.shutdown()
                return None
        if alive or self.pending:
            return None
        # a replica exits 0 only after the leader's stop; the leader may be on another host
        ok = self.finished() or all(c.proc.returncode == 0 for c in self.children.values())
        self.events.emit("launcher_done", finished=ok, restarts=self.restarts)
        return 0 if ok else 1

    def shutdown(self) -> None:
        """Close the plug-ins, then stop every replica process and the spare: SIGTERM (after a
        SIGCONT, as a stopped process cannot act on it), SIGKILL for those still alive after
        ``Timing.exit_grace_s``; each is reaped."""
        for plugin in self.plugins:
            plugin.close()
        if self.spare is not None:
            self.children[-1] = Child(-1, self.spare)  # stopped with the others below
            self.spare = None
        procs = [c.proc for c in self.children.values()]
        for sig in (signal.SIGCONT, signal.SIGTERM):
            signal_groups(procs, sig)
        end = time.monotonic() + self.timing.exit_grace_s
        while any(p.poll() is None for p in procs) and time.monotonic() < end:
            time.sleep(self.timing.launcher_poll_s)
        signal_groups(procs, signal.SIGKILL)
        for p in procs:
            try:
                p.wait(timeout=self.timing.reap_s)
            except subprocess.TimeoutExpired:
                pass


def signal_groups(procs: list[subprocess.Popen], sig: int) -> None:
    """Send ``sig`` to the process group (session) of each process still running."""
    for p in procs:
        if p.poll() is None and p.pid is not None:  # a forked replica has no pid until the spare forked it
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
