"""Every duration the replicas act on, in one place: ``Timing``, built from ``ReplicaConfig``.

Nothing else in ``tenacia.train.replicas`` holds a timeout or a period: the launcher, the
coordinator, the member's link, the heal channel and the process group read theirs from the one
``Timing`` of the run (``Timing.from_config``). Durations are seconds (float). The defaults of the
fields a config does not set were chosen for 2-core hosts under load (docs/benchmarks.md, "Run
of 2026-11-24, 01:25-01:38", hang bound); they are not tuned per run.

The rules they feed (``coordinator.py`` and ``member.py`` state the contracts):
- hang bound = ``max(hang_floor_s, hang_factor x median step time)`` over the last
  ``step_window`` committed steps once ``min_step_samples`` were measured, else ``hang_floor_s``;
  the leader takes it again at every commit and sends it with every ``LeaderHeartbeat``, so the
  members' bound follows the measured steps too (a quorum's own carries only its formation's);
- a member is stuck in its step when it computes for longer than the stuck bound
  ``max(stuck_floor_s, stuck_factor x hang bound)`` while a peer already waits in the all-reduce
  (a slow step is a straggler, not a hang); the collective itself is stuck when every member
  waits in it for longer than the hang bound;
- a process (leader or member) whose own clock jumped by more than ``max(hang bound,
  frozen_floor_s)`` between two ticks was frozen (SIGSTOP) and must rejoin;
- before a member has seen a quorum, it takes ``hang_before_quorum_s`` as its leader's hang bound;
- heartbeats (a member's to its leader, the leader's to its members) go every ``max(heartbeat_s,
  hang bound / heartbeats_per_bound)``, the bound being the one the current leader last told
  (``heartbeat_s`` until it told one): silence is judged against the bound, so beating ten times
  per bound detects as fast as beating every 100 ms, and rounds of many seconds (diloco over a
  long link) do not send ten control messages a second each way for nothing.

Time itself is read through a ``Clock`` (``now``: monotonic seconds for every decision, ``wall``:
the wall clock for timestamps that leave the process, ``sleep``): the coordinator takes one, so its
rules can be driven in a test by a clock the test moves.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import ReplicaConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class Timing:
    # liveness
    heartbeat_s: float = 0.1  # shortest period of members' and the leader's heartbeats (a thread of their own)
    heartbeats_per_bound: int = 10  # a heartbeat at least this often per hang bound (heartbeat_period)
    tick_s: float = 0.02  # period of the leader's monitor (hang, stuck and fence checks)
    hang_floor_s: float = 0.5  # ReplicaConfig.hang_floor_s
    hang_factor: float = 1.5  # ReplicaConfig.hang_factor
    min_step_samples: int = 3  # measured steps before the median counts
    step_window: int = 20  # steps the median is taken over
    stuck_floor_s: float = 10.0  # a member computing this long while a peer waits in the all-reduce...
    stuck_factor: float = 4.0  # ... and this many hang bounds, is stuck
    frozen_floor_s: float = 0.5  # a clock jump under this is never taken for a freeze
    straggler_s: float = 60.0  # diloco, streaming: under a tenth of the median speed this long is a straggler
    hang_before_quorum_s: float = 1.0  # a member's bound for its leader's silence before any quorum
    fence_check_s: float = 0.5  # how often a leader checks for a newer term between commits
    lease_ttl_s: int = 3  # ReplicaConfig.lease_ttl_s: an etcd lease outlives its last renewal by this
    lease_request_s: float = 2.0  # one request to etcd; a renewal that takes longer counts as failed
    # membership and election
    join_grace_s: float = 20.0  # ReplicaConfig.join_grace_s
    join_deadline_s: float = 60.0  # a replica that finds no leader within this gives up
    elect_after_s: float = 0.75  # every reachable peer leaderless this long: the lowest id leads
    connect_s: float = 1.0  # connect and first answer of a hello
    probe_s: float = 0.5  # connect to a leader candidate to see whether it is alive
    candidate_s: float = 3.0  # how long a failover keeps asking one live candidate
    retry_s: float = 0.05  # pause between rounds of asking the peers
    candidate_retry_s: float = 0.03  # pause between two asks of one candidate
    poll_s: float = 0.05  # the training thread's longest sleep on its inbox
    # state transfer and collectives
    heal_connect_s: float = 2.0  # a newcomer's connect to its donor
    heal_io_s: int = 60  # a heal send or receive that makes no progress this long fails (whole seconds)
    heal_offer_s: float = 30.0  # a donor waits this long for its training thread's offer
    store_s: float = 60.0  # the leader's TCPStore (quorum rendezvous)
    store_client_s: float = 10.0  # a member's connection to that store
    collective_s: float = 30.0  # a gloo collective (and the group's teardown) gives up after this
    # the launcher
    launcher_poll_s: float = 0.05  # the supervisor's longest sleep between two looks at its children
    restart_backoff_s: float = 0.2  # ReplicaConfig.restart_backoff_s
    restart_backoff_max_s: float = 5.0  # the doubling backoff's cap
    start_s: float = 120.0  # a started replica must publish its address within this
    exit_grace_s: float = 5.0  # on shutdown, a replica sent SIGTERM is killed after this
    after_finish_s: float = 10.0  # a replica still alive this long after finished.json is stopped
    reap_s: float = 10.0  # wait for a killed replica's exit status

    @classmethod
    def from_config(cls, cfg: ReplicaConfig) -> Timing:
        return cls(hang_floor_s=cfg.hang_floor_s, hang_factor=cfg.hang_factor, join_grace_s=cfg.join_grace_s,
                   lease_ttl_s=cfg.lease_ttl_s, restart_backoff_s=cfg.restart_backoff_s)

    def hang_bound(self, step_times: Sequence[float]) -> float:
        """The hang bound from the measured step times (module docstring)."""
        median = statistics.median(step_times) if len(step_times) >= self.min_step_samples else 0.0
        return max(self.hang_floor_s, self.hang_factor * median)

    def heartbeat_period(self, hang: float | None) -> float:
        """How often heartbeats go under hang bound ``hang`` (None: none known yet)."""
        return max(self.heartbeat_s, hang / self.heartbeats_per_bound) if hang else self.heartbeat_s

    def stuck_bound(self, hang: float) -> float:
        return max(self.stuck_floor_s, self.stuck_factor * hang)

    def frozen_after(self, hang: float) -> float:
        return max(hang, self.frozen_floor_s)

    def restart_backoff(self, failures: int) -> float:
        """Delay before restarting a replica after its ``failures``-th consecutive failure (>= 1)."""
        return min(self.restart_backoff_max_s, self.restart_backoff_s * 2 ** (failures - 1))


class Clock:
    """The process's clocks; a test passes a stand-in with the same three methods."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
