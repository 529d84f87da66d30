"""Links between sites and what a collective over them costs (the alpha-beta model).

A message of ``n`` bytes over a link costs ``alpha + n / beta``: ``alpha`` the one-way latency
(half the round trip the user gives), ``beta`` the bandwidth the transport reaches (the link's
rate x ``efficiency``, the fraction a real transport fills; ``calibrate.py`` fits it from a
measured run). Between sites every exchange is one of two ring collectives over the ``R`` sites,
each site one ring member (its chips' shards travel in parallel, so a site's whole WAN link is
the member's link):

    ring all-reduce (dense values: reduce-scatter then all-gather)
        2(R-1) alpha + 2(R-1)/R x n / beta_slowest
    ring all-gather (sparse top-k values: sums of sparse vectors do not stay sparse, so each
    site's (index, value) pairs travel whole, as SparseLoCo exchanges them; ``n`` per site)
        (R-1) alpha + (R-1) x n / beta_slowest

Every ring step waits for its slowest hop: the slowest link's bandwidth and the largest latency
set the pace. Inside a site the catalog's scale-up and scale-out links apply (``training.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check, check_finite


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


def ring_allreduce_s(nbytes: float, ranks: int, links: list[Link]) -> float:
    """Seconds for a ring all-reduce of ``nbytes`` per member over ``ranks`` members joined by
    ``links`` (module docstring); 0 for a single member."""
    if ranks <= 1:
        return 0.0
    alpha = max(link.alpha_s for link in links)
    beta = min(link.beta_bytes_s for link in links)
    return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * nbytes / beta


def ring_allgather_s(nbytes_each: float, ranks: int, links: list[Link]) -> float:
    """Seconds for a ring all-gather of ``nbytes_each`` from every member (module docstring)."""
    if ranks <= 1:
        return 0.0
    alpha = max(link.alpha_s for link in links)
    beta = min(link.beta_bytes_s for link in links)
    return (ranks - 1) * alpha + (ranks - 1) * nbytes_each / beta
