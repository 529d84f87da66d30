"""How a replica comes to lead: a term from the lease store, and never once the job is over.

``make_coordinator`` claims a term (``lease.py``; ``LeaseHeld`` while another leader's exclusive
lease is valid, ``StoreUnreachable`` when the store cannot be asked) and starts this replica's
``Coordinator`` under it. ``first_coordinator`` is the job's first term: an earlier job's leader
may still hold an etcd lease for up to one TTL, so it asks again until then. ``peer_addresses``
is where a replica looks for the leader: the newest term's leader, the seeds, then every replica
published in the run directory.

A finished job is immutable: once ``finished.json`` exists, ``refuse_if_finished`` raises
``JobFinished`` and the replica exits 0 without leading, rejoining or writing anything (a replica
frozen through the finish and continued afterwards).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...data.ledger import SampleLedger
from ...events import EventLog
from ..config import RunConfig
from . import addresses
from .control_server import ControlServer
from .coordinator import Coordinator
from .lease import DirLeaseStore, LeaseHeld, LeaseStore, StoreUnreachable
from .protocol import Quorum
from .timing import Timing


def open_store(spec: str, run_dir: Path, ttl_s: int, request_s: float) -> LeaseStore:
    """The store ``replicas.lease`` names (``dir`` or ``etcd://HOST:PORT[/PREFIX]``)."""
    if spec == "dir":
        return DirLeaseStore(run_dir)
    if spec.startswith("etcd://"):
        # etcd's client costs ~0.25 s to import: a replica that does not use it does not pay it
        from .etcd_lease import EtcdLeaseStore

        return EtcdLeaseStore(spec, run_dir, ttl_s, request_s)
    raise ValueError(f"replicas.lease = {spec!r}: expected 'dir' or 'etcd://HOST:PORT[/PREFIX]'")


class JobFinished(Exception):
    """The run directory holds ``finished.json``: the job is over and its records are final."""


class Leadership:
    def __init__(self, cfg: RunConfig, replica: int, seeds: list[str], server: ControlServer, timing: Timing,
                 events: Any):
        self.cfg, self.id, self.seeds, self.server, self.timing, self.events = cfg, replica, seeds, server, timing, events
        self.run_dir = Path(cfg.train.run_dir)
        self.leases = open_store(cfg.replicas.lease, self.run_dir, timing.lease_ttl_s, timing.lease_request_s)

    def refuse_if_finished(self) -> None:
        if (self.run_dir / "finished.json").exists():
            raise JobFinished(f"{self.run_dir} holds finished.json: the job is over")

    def peer_addresses(self) -> list[str]:
        try:
            lead = self.leases.leader()
        except (OSError, ValueError):  # the lease store is unreachable (StoreUnreachable): ask the peers
            lead = None
        out = [lead["control"]] if lead and lead["replica"] != self.id else []
        out += [s for s in self.seeds if s not in out]
        for info in addresses.read_all(self.run_dir):
            if info["replica"] != self.id and info["control"] not in out:
                out.append(info["control"])
        return out

    def make_coordinator(self, *, term: int, expected: set[int], last_quorum_id: int = 0,
                         takeover_from: float | None = None, previous: Quorum | None = None,
                         dead_term: int | None = None, dead: set[int] | None = None) -> Coordinator:
        self.refuse_if_finished()
        lease = self.leases.claim(self.id, self.server.addr, at_least=term, dead_term=dead_term)
        cfg = self.cfg
        return Coordinator(replica=self.id, term=lease.term, lease=lease, dead=dead, host=cfg.replicas.host,
                           cfg=cfg.replicas, timing=self.timing, total_steps=cfg.train.steps,
                           events=EventLog(self.events.path, f"coordinator:{self.id}"),
                           ledger=SampleLedger(self.run_dir / "ledger.jsonl"), expected=expected,
                           run_dir=self.run_dir, log_every=cfg.train.log_every, batch_size=cfg.step_samples,
                           last_quorum_id=last_quorum_id, takeover_from=takeover_from, previous=previous,
                           numerics=cfg.numerics).start()

    def first_coordinator(self) -> Coordinator:
        first = self.cfg.replicas.first_id
        end = time.monotonic() + self.timing.lease_ttl_s + self.timing.connect_s
        while True:
            try:
                return self.make_coordinator(term=1, expected=set(range(first, first + self.cfg.replicas.count)))
            except (LeaseHeld, StoreUnreachable):
                if time.monotonic() > end:
                    raise
                time.sleep(self.timing.retry_s)
