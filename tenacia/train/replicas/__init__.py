"""Fault-tolerant data-parallel replicas: training that survives crashes and hangs without a
global restart. Each replica is one process holding a full model copy; it builds on the
single-process trainer (``tenacia.train.trainer``), which never imports this package.

Along a step's path:
- ``launcher.py``: this host's replica processes, their restarts, a warm spare, plug-ins;
- ``replica.py``: one replica process, its step (quorum, shares, compute, reduce, vote, apply);
- ``apply.py``: a member's own state changes: the pending step, applying it, loading a healed state;
- ``coordinator.py``: the leader role inside the lowest live replica: quorums, votes, commits,
  takeover (the fault-tolerance contract is its docstring);
- ``steplog.py``: what the leader records of each committed step, and the measured step times;
- ``member.py``: a member's link to its leader (heartbeats, silence, failover);
- ``protocol.py``: every message, typed, and its one conversion to and from the wire;
- ``timing.py``: every period and timeout, in one ``Timing`` built from the config;
- ``leadership.py``: how a replica comes to lead (a term from the lease store), and never after the finish;
- ``lease.py``: leader terms and leases (the run directory's store), and the fence;
- ``etcd_lease.py``: the same as etcd leases, exclusive and renewed in the background;
- ``liveness.py``: what the leader knows of each member, and the rules that expel one;
- ``takeover.py``: a new leader's decision on the step the old one may have been committing;
- ``majority.py``: who may form a quorum when members went silent;
- ``sync.py``: the sync strategy: what a step reduces and what the reduced value does;
- ``votecheck.py``: fields other modules add to the vote, judged by the leader before a commit;
- ``spare.py``, ``forked.py``: the warm spare that forks a ready replica, and the launcher's handle;
- ``shares.py``: who computes which samples of the global batch, and salvaged gradients;
- ``group.py``: a fresh gloo group per quorum, old ones retired off the training thread;
- ``heal.py``: a newcomer's state streamed from a live peer;
- ``wire.py``: length-prefixed messages over TCP;
- ``addresses.py``: where each replica can be reached (``replicas/r<id>.json``);
- ``spare.py``: a warm replica process waiting for an id;
- ``monitor.py``: the launcher's live progress line.
"""
