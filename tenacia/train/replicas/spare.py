"""The warm spare: one process that warms up once, then forks a ready replica for every order.

The launcher starts the spare with ``TENACIA_SPARE_REPORT`` naming a pipe it reads (``forked.py``
is its side). The spare imports torch, builds the model and optimizer and loads the data (with one
thread: no OpenMP pool exists in it, so a forked child starts a clean one), loads the newest disk
checkpoint, writes ``{"ready": pid}``, then waits on stdin. Each order ``{"replica", "join",
"log"}`` is answered by ``fork()``: the child is that replica at once (its own session, its
stdout and stderr appended to ``log``, killed when the spare dies, ``replica_threads`` threads),
and heals the current state from a peer like any newcomer; the spare writes ``{"forked": replica,
"pid": pid}`` and, when a child exits, ``{"exited": pid, "code": code}`` (negative: the signal).
So a dead replica is replaced in the time a fork and a heal take, every time, not only when a new
spare had the CPU to warm up: on a busy host a spare warming at idle priority may never run.
Closing stdin ends the spare.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import torch

from ...process import die_with_parent
from ..config import RunConfig
from ..trainer import Trainer
from .device_slot import SLOT_ENV
from .forked import REPORT_ENV


def _report(fd: int, **fields: object) -> None:
    os.write(fd, (json.dumps(fields) + "\n").encode())  # one write under PIPE_BUF: whole lines


def _reap(fd: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _report(fd, exited=pid, code=os.waitstatus_to_exitcode(status))


def _become_replica(cfg: RunConfig, report_fd: int, log: str) -> None:
    """In the forked child: a session of its own, dies with the spare, logs to ``log``."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    die_with_parent()
    os.close(report_fd)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(devnull)
    torch.set_num_threads(cfg.replica_threads)


def wait_as_spare(cfg: RunConfig) -> tuple[int, list[str], Trainer]:
    """The spare's life (module docstring); returns only in a forked child: (replica, join, trainer)."""
    report_fd = int(os.environ.pop(REPORT_ENV))
    torch.set_num_threads(1)
    trainer = Trainer(cfg, source="replica:spare", write_ledger=False)
    if cfg.checkpoint.resume:
        trainer.resume(event="replica_checkpoint_loaded")
    signal.signal(signal.SIGCHLD, lambda *_: _reap(report_fd))
    _report(report_fd, ready=os.getpid())
    for line in sys.stdin:
        order = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _become_replica(cfg, report_fd, order["log"])
            os.environ[SLOT_ENV] = str(order.get("slot", order["replica"]))
            return int(order["replica"]), list(order["join"]), trainer
        _report(report_fd, forked=order["replica"], pid=pid)
    raise SystemExit(0)  # the launcher closed our stdin: not needed any more
