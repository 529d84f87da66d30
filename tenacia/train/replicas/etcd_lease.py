"""Leader terms held as etcd leases (``replicas.lease = "etcd://HOST:PORT[/PREFIX]"``).

Through etcd's v3 API (its JSON gateway, with the ``etcd3gw`` client: no gRPC stack to install).
Two keys under the run's prefix (default ``/tenacia<absolute run_dir>``):

- ``<prefix>/term``: the newest claimed term, a decimal number; never attached to a lease, so it
  only grows.
- ``<prefix>/leader``: JSON ``{term, replica, control, pid, lease}`` of the term's leader, attached
  to that leader's etcd lease (``lease_ttl_s`` seconds): it disappears when the lease expires or
  is revoked.

Claiming term T is one transaction: "``term`` still holds the value read and ``leader`` does not
exist" then write both. So two claimants never both win, and nobody wins while a leader's lease is
valid, except that a claimant that saw the leader of ``dead_term`` die (its connection closed)
revokes that leader's lease first. A claim refused because a lease is held raises ``LeaseHeld``.

The holder renews in a background thread every third of the TTL (never on a step's critical
path). ``valid()`` is a local comparison with a deadline: TTL after the send time of the last
renewal etcd confirmed with the record still ours. etcd counts the TTL from when it received that
renewal, later than we sent it, so the holder stops believing in its lease before etcd lets
anyone else claim (assuming clocks that run at the same rate within the TTL's margin).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from .lease import LeaseHeld, StoreUnreachable


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdLease:
    """A held term (see the module docstring). ``start`` runs the renewals; ``on_lost(why)`` is
    called once when the lease is found gone or superseded."""

    exclusive = True

    def __init__(self, store: EtcdLeaseStore, term: int, lease_id: int, sent_at: float):
        self.store, self.term, self.newest, self.lease_id = store, term, term, lease_id
        self.ttl_s = store.ttl_s
        self.deadline = sent_at + self.ttl_s
        self.lost: str | None = None
        self._stop = threading.Event()
        self._on_lost: Callable[[str], None] | None = None

    def valid(self) -> bool:
        return self.lost is None and time.monotonic() < self.deadline

    def renew(self) -> bool:
        """One renewal: keep the etcd lease alive and check the leader record is still ours."""
        sent = time.monotonic()
        try:
            ttl = self.store.keepalive(self.lease_id)
            record = self.store.leader()
        except (StoreUnreachable, ValueError):
            return False  # etcd unreachable: the deadline is not moved
        if record is not None and record["term"] != self.term:
            self.newest = max(self.newest, int(record["term"]))
            self._lose(f"term {record['term']} of replica {record['replica']} leads now")
        elif record is None or ttl <= 0:
            self._lose("the etcd lease expired or was revoked")
        else:
            self.deadline = sent + min(self.ttl_s, ttl)
        return self.lost is None

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            if self._on_lost is not None:
                self._on_lost(why)

    def start(self, on_lost: Callable[[str], None] | None = None) -> None:
        self._on_lost = on_lost
        threading.Thread(target=self._renewals, name="lease-renewal", daemon=True).start()

    def _renewals(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            if not self.renew() and self.lost is not None:
                return

    def release(self) -> None:
        self._stop.set()
        self.lost = self.lost or "released"
        try:
            self.store.revoke(self.lease_id)
        except StoreUnreachable:
            pass  # it expires on its own within the TTL


class EtcdLeaseStore:
    exclusive = True

    def __init__(self, url: str, run_dir: Path, ttl_s: int, request_s: float):
        parsed = urlparse(url)
        if parsed.scheme != "etcd" or not parsed.hostname or not parsed.port:
            raise ValueError(f"replicas.lease = {url!r}: expected etcd://HOST:PORT[/PREFIX]")
        self.url, self.ttl_s = url, int(ttl_s)
        prefix = parsed.path.rstrip("/") or "/tenacia" + str(Path(run_dir).resolve())
        self.k_term, self.k_leader = prefix + "/term", prefix + "/leader"
        self.client = Etcd3Client(parsed.hostname, parsed.port, timeout=request_s, api_path="/v3/")

    # ----- requests ------------------------------------------------------------------------------------
    def _ask(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except Etcd3Exception as e:
            raise StoreUnreachable(f"etcd at {self.url}: {what} failed: {type(e).__name__}: {e}") from e

    def _read(self, key: str) -> bytes | None:
        found = self._ask(f"reading {key}", self.client.get, key)
        return found[0] if found else None

    def newest_term(self) -> int:
        raw = self._read(self.k_term)
        return int(raw) if raw else 0

    def leader(self) -> dict[str, Any] | None:
        raw = self._read(self.k_leader)
        return json.loads(raw) if raw else None

    def keepalive(self, lease_id: int) -> float:
        result = self._ask("a lease renewal", self.client.post, self.client.get_url("/lease/keepalive"),
                           json={"ID": lease_id})
        return float(result.get("result", {}).get("TTL", -1))

    def revoke(self, lease_id: int) -> None:
        self._ask("a lease revocation", self.client.post, self.client.get_url("/lease/revoke"), json={"ID": lease_id})

    # ----- the claim ---------------------------------------------------------------------------------
    def claim(self, replica: int, control: str, *, at_least: int = 1, dead_term: int | None = None) -> EtcdLease:
        for _ in range(100):  # another claimant moved the counter between our read and our write
            current = self._read(self.k_term)
            holder = self.leader()
            if holder is not None:
                if dead_term is not None and holder.get("term") == dead_term:
                    self.revoke(int(holder["lease"]))  # its leader's connection closed: it is dead
                    continue
                raise LeaseHeld(int(holder["term"]), int(holder["replica"]), str(holder["control"]), self.ttl_s)
            term = max(at_least, int(current or 0) + 1)
            sent = time.monotonic()
            lease_id = int(self._ask("a lease grant", self.client.lease, self.ttl_s).id)
            record = {"term": term, "replica": replica, "control": control, "pid": os.getpid(), "lease": lease_id}
            same_term = ({"key": _b64(self.k_term), "result": "EQUAL", "target": "VALUE", "value": _b64(current.decode())}
                         if current is not None else
                         {"key": _b64(self.k_term), "result": "EQUAL", "target": "VERSION", "version": 0})
            no_leader = {"key": _b64(self.k_leader), "result": "EQUAL", "target": "VERSION", "version": 0}
            done = self._ask("the claim transaction", self.client.transaction, {
                "compare": [same_term, no_leader],
                "success": [{"request_put": {"key": _b64(self.k_term), "value": _b64(str(term))}},
                            {"request_put": {"key": _b64(self.k_leader), "value": _b64(json.dumps(record)),
                                             "lease": lease_id}}],
                "failure": []})
            if done.get("succeeded"):
                return EtcdLease(self, term, lease_id, sent)
            self.revoke(lease_id)
        raise RuntimeError(f"could not claim a term in {self.url}: the term counter kept moving")
