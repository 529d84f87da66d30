"""Chips of different speeds, emulated: a replica process limited to a share of the CPU by a
cgroup CPU quota (the kernel's CFS bandwidth control), not by sleeping or by SIGSTOP cycles.

A quota of ``cores`` lets the process's threads together run ``cores * period`` microseconds in
every ``period`` (100 ms); the kernel throttles it for the rest of the period. Unlike a SIGSTOP
duty cycle, the process never looks stopped to its peers: its heartbeat thread is throttled with
its compute, as a slow chip's host would be, and its sockets stay open.

``CpuQuotas`` owns one cgroup per replica slot, named ``tn-<owner pid>-r<slot>`` under the cpu
controller. ``place(slot, pid)`` moves a (new) process of that slot into its cgroup (a replica
restarted or forked from a spare gets a new pid: the launcher's chaos plug-in places it on its
next tick); ``set(slot, cores)`` changes the quota live (a chip that turns slow mid-run);
``close()`` moves every process back to the root cgroup and removes the cgroups;
``cleanup_stale()`` removes those of owners that died before their ``close``.

Both cgroup layouts are handled: v1 (a ``cpu`` hierarchy with ``cpu.cfs_quota_us``) and v2 (the
unified hierarchy with ``cpu.max``; the root must be able to delegate the ``cpu`` controller).
``available()`` says why not when neither is usable (not root, no controller).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PERIOD_US = 100_000
_NAME = re.compile(r"^tn-(\d+)-r\d+$")
_V1 = Path("/sys/fs/cgroup/cpu")
_V2_CANDIDATES = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


def _v2_root() -> Path | None:
    for root in _V2_CANDIDATES:
        controllers = root / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return root
    return None


def _layout() -> tuple[str, Path] | None:
    if (_V1 / "cpu.cfs_quota_us").exists():
        return "v1", _V1
    root = _v2_root()
    return ("v2", root) if root is not None else None


def available() -> str | None:
    """None when quotas can be set here, else why not (for a test's skip reason)."""
    if os.geteuid() != 0:
        return "CPU quotas need root (cgroup writes)"
    layout = _layout()
    if layout is None:
        return "no cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 with 'cpu' in cgroup.controllers)"
    kind, root = layout
    if kind == "v2":
        control = root / "cgroup.subtree_control"
        try:
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu")
        except OSError as e:
            return f"cgroup v2 cannot delegate the cpu controller from {root}: {e}"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class CpuQuotas:
    """One cgroup per replica slot with a CPU quota (module docstring)."""

    def __init__(self) -> None:
        why = available()
        if why is not None:
            raise RuntimeError(f"CPU quotas unavailable: {why}")
        self.kind, self.root = _layout()  # type: ignore[misc]
        self.owner = os.getpid()
        self.groups: dict[int, Path] = {}
        self.cores: dict[int, float] = {}  # slot -> its quota in CPUs (0: none)
        self.cleanup_stale()

    def group(self, slot: int) -> Path:
        if slot not in self.groups:
            path = self.root / f"tn-{self.owner}-r{slot}"
            path.mkdir(exist_ok=True)
            self.groups[slot] = path
        return self.groups[slot]

    def set(self, slot: int, cores: float) -> None:
        """Limit slot ``slot`` to ``cores`` CPUs (0 or less: no limit)."""
        path = self.group(slot)
        self.cores[slot] = max(cores, 0.0)
        quota = max(1000, round(cores * PERIOD_US)) if cores > 0 else None
        if self.kind == "v1":
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota if quota is not None else -1))
        else:
            (path / "cpu.max").write_text(f"{quota if quota is not None else 'max'} {PERIOD_US}")

    def place(self, slot: int, pid: int) -> bool:
        """Move process ``pid`` (all its threads) into slot ``slot``'s cgroup; False if it is gone."""
        try:
            (self.group(slot) / "cgroup.procs").write_text(str(pid))
            return True
        except (ProcessLookupError, OSError):
            return False

    def pids(self, slot: int) -> list[int]:
        return [int(p) for p in (self.group(slot) / "cgroup.procs").read_text().split()]

    def throttled(self, slot: int) -> int:
        """Periods in which the kernel throttled this slot so far (``cpu.stat``)."""
        for line in (self.group(slot) / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "nr_throttled":
                return int(value)
        return 0

    def close(self) -> None:
        for path in self.groups.values():
            _remove(path, self.root)
        self.groups.clear()

    def cleanup_stale(self) -> None:
        """Remove the cgroups of owners that are no longer alive."""
        for path in self.root.iterdir():
            m = _NAME.match(path.name)
            if m and path.is_dir() and not _alive(int(m.group(1))):
                _remove(path, self.root)


def _remove(path: Path, root: Path) -> None:
    """Move the group's processes to the root cgroup, then remove it (a cgroup with members
    cannot be removed)."""
    try:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (root / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # exited meanwhile
        path.rmdir()
    except FileNotFoundError:
        pass
