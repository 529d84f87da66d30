"""Links between sites and what a collective over them costs (the alpha-beta model).

A message of ``n`` bytes over a link costs ``alpha + n / beta``: ``alpha`` the one-way latency
(half the round trip the user gives), ``beta`` the bandwidth the transport reaches (the link's
rate x ``efficiency``, the fraction a real transport fills; ``calibrate.py`` fits it from a
measured run). Between sites every exchange is one collective over the ``R`` sites, each site
one member (its chips' shards travel in parallel, so a site's whole WAN link is the member's
link, and everything a member sends shares it). ``n`` is one member's payload; a collective
costs its one-way trips x alpha plus the copies of ``n`` each member sends (and receives) /
beta_slowest:

    collective          what moves                                          trips      copies
    ring_allreduce      dense values: ring reduce-scatter then ring          2(R-1)     2(R-1)/R
                        all-gather (gloo's all-reduce)
    ring_allgather      each member's payload forwarded round the ring       R-1        R-1
                        (top-k pairs: sums of sparse vectors do not stay
                        sparse, so each site's pairs travel whole, as
                        SparseLoCo exchanges them)
    allgather           every member's payload to every other at once        1          R-1
                        (tenacia's ``all_gather`` exchange, direct)
    reduce_scatter      two all-to-alls: chunk j of every payload to         2          2(R-1)/R
                        member j, then j's re-quantized sum to every member
                        (tenacia's ``reduce_scatter`` exchange)

The direct forms are the streams transport's (``tenacia/train/transport``: one one-way trip an
all-to-all, docs/sync.md). With a full mesh of pairwise links, each of the link's rate, a direct
form would move its copies up to R-1 times faster; the model gives a member one link (as the
ring, which uses one link a member) and does not count that. Every step waits for its slowest
hop: the slowest link's bandwidth and the largest latency set the pace. Inside a site the
catalog's scale-up and scale-out links apply (``training.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check, check_finite

COLLECTIVES = ("ring_allreduce", "ring_allgather", "allgather", "reduce_scatter")


@dataclass(kw_only=True, slots=True)
class Link:
    """The link joining every pair of sites (an assumption of the plan: give your own)."""

    rtt_ms: float = 100.0  # round trip between two sites, ms
    gbit_s: float = 100.0  # link rate between two sites, Gbit/s (1e9 bits)
    # Fraction of the link rate the transport reaches (a planner default: msmodeling's
    # comm_efficiency 0.7, FACTS.md); --calibrate-links fits it from a measured run.
    efficiency: float = 0.7

    def __post_init__(self) -> None:
        check_finite(self)
        check(self.rtt_ms >= 0, "rtt_ms", self.rtt_ms, "a round trip in ms >= 0")
        check(self.gbit_s > 0, "gbit_s", self.gbit_s, "a link rate in Gbit/s > 0")
        check(0 < self.efficiency <= 1, "efficiency", self.efficiency, "a fraction of the link rate in (0, 1]")

    @property
    def alpha_s(self) -> float:
        """One-way latency, s."""
        return self.rtt_ms / 2e3

    @property
    def beta_bytes_s(self) -> float:
        """Bytes per second the transport moves over this link."""
        return self.gbit_s * 1e9 / 8 * self.efficiency


def trips(collective: str, ranks: int) -> int:
    """One-way trips, one after another, of ``collective`` over ``ranks`` members (module docstring)."""
    if ranks <= 1:
        return 0
    return {"ring_allreduce": 2 * (ranks - 1), "ring_allgather": ranks - 1, "allgather": 1,
            "reduce_scatter": 2}[collective]


def copies(collective: str, ranks: int) -> float:
    """Copies of its payload each member sends (and receives) in ``collective`` (module docstring)."""
    if ranks <= 1:
        return 0.0
    gather = collective in ("ring_allgather", "allgather")
    return float(ranks - 1) if gather else 2 * (ranks - 1) / ranks


def collective_s(collective: str, nbytes: float, ranks: int, links: list[Link]) -> float:
    """Seconds ``collective`` of ``nbytes`` per member takes over ``ranks`` members joined by
    ``links``: its trips at the largest latency plus its copies at the slowest bandwidth; 0 for
    a single member."""
    if ranks <= 1:
        return 0.0
    alpha = max(link.alpha_s for link in links)
    beta = min(link.beta_bytes_s for link in links)
    return trips(collective, ranks) * alpha + copies(collective, ranks) * nbytes / beta
