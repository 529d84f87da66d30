"""Thin wrappers over ``ip netns``, ``ip link`` and ``tc``, and the child-process set-up every lab
process gets (own session, killed when its parent dies).

Everything here needs root (CAP_NET_ADMIN) and iproute2; ``available()`` says whether both are
there, and why not when they are not.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from ..process import die_with_parent


class NetnsError(RuntimeError):
    """An ``ip``/``tc`` command failed; the message holds the command and its stderr."""


def available() -> tuple[bool, str]:
    """(True, "") when network namespaces can be made here, else (False, the reason)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root (CAP_NET_ADMIN); this process is not root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"'{tool}' (iproute2) is not installed"
    probe = f"tn-probe-{os.getpid()}"
    try:
        run("ip", "netns", "add", probe)
    except NetnsError as e:
        return False, f"'ip netns add' does not work here: {e}"
    run("ip", "netns", "del", probe, check=False)
    return True, ""


def run(*argv: str, check: bool = True, timeout: float = 10.0) -> str:
    """Run one command; its stdout, or ``NetnsError`` naming the command and its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def names() -> list[str]:
    """Names of every network namespace (``ip netns list``)."""
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def pids(ns: str) -> list[int]:
    """Processes whose network namespace is ``ns``."""
    return [int(p) for p in run("ip", "netns", "pids", ns, check=False).split()]


def delete(ns: str) -> None:
    """Kill every process left in ``ns``, then remove it (and with it every link inside)."""
    for _ in range(50):
        left = pids(ns)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    run("ip", "netns", "del", ns, check=False)


def child_setup() -> None:
    """``preexec_fn`` for lab processes: SIGKILL when the parent dies (survives ``exec``).

    Use with ``start_new_session=True`` so that the process and its children form one group
    that teardown kills with ``os.killpg``.
    """
    die_with_parent()


def kill_group(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGKILL the session ``proc`` leads (works on stopped processes too) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
