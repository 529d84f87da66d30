"""Leader terms and leases: at most one leader per term, a fence, and (with etcd) exclusion.

A replica becomes leader only by claiming a new term from the run's lease store
(``replicas.lease``). Two stores:

- ``dir`` (the default; one host, or a POSIX filesystem every host shares): a term is claimed by
  creating ``<run_dir>/terms/<term>.json`` with ``O_CREAT | O_EXCL``, which exactly one process can
  do for a given number. The newest term file names the current leader and its control address.
  Its leases are not exclusive: anyone may claim a newer term at any time, and the old leader
  learns it from the fence (a newer term file exists), checked before every commit and every
  ``Timing.fence_check_s`` between commits. Holds where the ``O_EXCL`` create is atomic (local
  filesystems, NFSv3+).
- ``etcd://HOST:PORT[/PREFIX]`` (``etcd_lease.py``; ``leadership.open_store`` opens either): the term counter and the leader's record live
  in etcd; the record is attached to an etcd lease of ``lease_ttl_s`` seconds that the leader
  renews in the background. A new term can be claimed only once no leader record exists: the old
  lease expired, was released, or was revoked by a member that saw the old leader's connection
  close (proof of death). The lease is exclusive: while it is valid nobody else leads.

Contract of a held ``Lease`` (what the coordinator relies on):
- ``term`` is the term it holds; ``exclusive`` says whether others are kept out while it is valid.
- ``valid()`` is a local check (no I/O for etcd; a directory listing for ``dir``) that is True
  only while the lease still holds: for etcd, until ``lease_ttl_s`` after the send time of the
  last renewal etcd confirmed, and never again once a renewal found the lease or the term gone.
  So a leader cut off from etcd stops acting within one TTL, before etcd lets anyone else claim.
- ``release()`` gives it up (etcd: revoked at once, so a successor need not wait for the TTL).
- ``newest`` is the newest term the holder knows of (its own, or a newer one it learned).

The quorum rule these leases feed (``coordinator.py``, "Majority"): a leader without a valid
exclusive lease never forms a quorum with a minority of the last quorum's members.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol


class LeaseHeld(Exception):
    """Another leader's lease is still valid: no new term can be claimed before it expires."""

    def __init__(self, term: int, replica: int, control: str, ttl_s: float):
        super().__init__(f"term {term} of replica {replica} ({control}) holds the lease for up to {ttl_s:.1f}s")
        self.term, self.replica, self.control, self.ttl_s = term, replica, control, ttl_s


class StoreUnreachable(OSError):
    """The lease store could not be asked (etcd down or cut off): nothing was claimed."""


class Lease(Protocol):
    term: int
    exclusive: bool
    newest: int

    def valid(self) -> bool: ...

    def release(self) -> None: ...

    def start(self, on_lost: Any = None) -> None: ...


class LeaseStore(Protocol):
    exclusive: bool

    def claim(self, replica: int, control: str, *, at_least: int = 1, dead_term: int | None = None) -> Lease:
        """Claim the next free term >= ``at_least``; ``dead_term``: the term whose leader this caller saw
        die (its connection closed), whose lease may be revoked. Raises ``LeaseHeld``, or
        ``StoreUnreachable`` (an ``OSError``) when the store cannot be asked."""
        ...

    def newest_term(self) -> int: ...

    def leader(self) -> dict[str, Any] | None:
        """The newest term's record: ``term``, ``replica``, ``control`` (address), ``pid``."""
        ...


# ----- the run directory ----------------------------------------------------------------------------
def terms_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "terms"


def newest_term(run_dir: Path) -> int:
    """The highest claimed term (0 when none)."""
    d = terms_dir(run_dir)
    if not d.is_dir():
        return 0
    numbers = [int(p.stem) for p in d.glob("*.json") if p.stem.isdigit()]
    return max(numbers, default=0)


def claim_term(run_dir: Path, replica: int, control: str, at_least: int = 1) -> int:
    """Claim the next free term >= ``at_least`` (and above every claimed one); returns it."""
    d = terms_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    term = max(at_least, newest_term(run_dir) + 1)
    while True:
        try:
            fd = os.open(d / f"{term:08d}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            term += 1
            continue
        try:
            os.write(fd, json.dumps({"term": term, "replica": replica, "control": control,
                                     "pid": os.getpid()}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return term


def leader_of(run_dir: Path) -> dict[str, Any] | None:
    """The newest term's record (replica, control address, pid), if it can be read."""
    term = newest_term(run_dir)
    if not term:
        return None
    try:
        return json.loads((terms_dir(run_dir) / f"{term:08d}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


class DirLease:
    """A term claimed in the run directory: valid while no newer term file exists."""

    exclusive = False

    def __init__(self, run_dir: Path, term: int):
        self.run_dir, self.term, self.newest = Path(run_dir), term, term

    def valid(self) -> bool:
        self.newest = max(self.newest, newest_term(self.run_dir))
        return self.newest <= self.term

    def release(self) -> None:
        pass  # a term file stays: it is the record of who led when

    def start(self, on_lost: Any = None) -> None:
        pass  # checked on demand (``valid``): nothing to renew


class DirLeaseStore:
    exclusive = False

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def claim(self, replica: int, control: str, *, at_least: int = 1, dead_term: int | None = None) -> DirLease:
        return DirLease(self.run_dir, claim_term(self.run_dir, replica, control, at_least))

    def newest_term(self) -> int:
        return newest_term(self.run_dir)

    def leader(self) -> dict[str, Any] | None:
        return leader_of(self.run_dir)
