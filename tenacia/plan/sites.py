"""A fleet over several sites: each site's inner step, and the run a sync strategy makes of them.

Every site is an island of synchronous data parallelism with its own layout (searched as for a
fleet of its own: its optimizer states shard over its replicas only) and the sites meet in the
strategy's exchange (``sync.py``). Site s takes the share B_s = B x chips_s / chips of the global
batch B (equal work per chip: the lock-step split); ``search.py``/``estimate.py`` give its inner
step t_s (micro-batches, bubble, its own gradient reduction and optimizer) and its solo rate
r_s = B_s x seq / t_s tokens/s.

A round is H inner steps (1 for ddp) of B x seq tokens over all sites. ``fleet.balance``, the same
choice as between chip types inside a site, says how the work of a round is split:

- 'slowest' (lock-step): every site runs H steps of its share and the round's compute takes
  H max_s t_s: the fleet trains sum_s B_s / max_s (B_s / r_s) tokens/s of compute
  (``lockstep_rate``; equal shares: the number of members x the slowest rate);
- 'proportional' (work sized to speed): each site trains tokens in proportion to its rate (more
  samples per inner step; the outer average weighted by the tokens each trained), so the compute
  takes H B seq / sum_s r_s (``sized_rate``: the sum of the rates).

The same two splits hold between the chip types of a site (``estimate.py``'s balance): a site of
several groups is estimated both ways, its lock-step rate entering the lock-step pace and its
sized rate the sized one. Throughput = tokens per round / (compute + exposed communication);
compute utilization = that / sum_s r_s (sized), the same sites' rate with no link and no sync
(the issue's definition). The time to
the token budget at equal quality divides the budget by the token efficiency (``quality.py``).
Not counted: the outer optimizer's step and memory (fp32 copies kept on the hosts, as
INTELLECT-1 did); the exchange inside a site before and after the cross-site one (replicas of a
site hold equal weights under ddp inside it, and each chip sends its own shard).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import check
from .assumptions import Assumptions
from .catalog import Chip
from .estimate import TrainingEstimate, estimate_training
from .fleet import FleetSpec
from .layout import Layout
from .models import ModelSpec
from .quality import token_efficiency
from .search import search_layout
from .sync import SyncSpec, exchange_bytes, exchange_s, exposed_per_round, unmeasured, wire_bytes
from .training import hardware_flops_per_token, model_flops_per_token


@dataclass(kw_only=True, slots=True, frozen=True)
class Site:
    """One site alone (no link, no sync with other sites) with its share of the batch: its chip
    types in lock-step and with work sized to their speed (one estimate when it has one group)."""

    name: str
    batch_seqs: float
    lockstep: TrainingEstimate
    sized: TrainingEstimate

    def estimate(self, balance: str) -> TrainingEstimate:
        return self.sized if balance == "proportional" else self.lockstep


@dataclass(kw_only=True, slots=True, frozen=True)
class SyncEstimate:
    """One strategy on a fleet of sites (module docstring). Rates in tokens/s, times in s; each
    rate under both ways of splitting the work, ``balance`` the plan's."""

    spec: SyncSpec
    sites: list[Site]
    balance: str
    tokens_round: float  # every site's tokens in one round of H inner steps
    exchange_bytes: float  # one site's payload in one round's exchange (every fragment; 0: one site)
    wire_bytes: float  # what one site sends over its link in that exchange (its payload x the collective's copies)
    exchange_s: float  # that exchange on the link, fragments one after another
    exposed_lockstep: float  # communication a round cannot hide, lock-step
    exposed_sized: float  # and with work sized to speed (a shorter round hides less)
    solo_rate: float  # the sites' solo rates summed: no link, no sync
    rate_lockstep: float
    rate_sized: float
    token_efficiency: float
    tokens_needed: float  # the budget / token_efficiency
    cost_per_s: float  # the whole fleet's price

    @property
    def rate(self) -> float:
        """Tokens/s under the plan's balance."""
        return self.rate_sized if self.balance == "proportional" else self.rate_lockstep

    @property
    def days(self) -> float:
        """Days to the tokens needed for equal quality, under the plan's balance."""
        return self.tokens_needed / self.rate / 86400

    @property
    def bytes_per_token(self) -> float:
        """One site's payload per token the fleet trains."""
        return self.exchange_bytes / self.tokens_round

    @property
    def wire_bytes_per_token(self) -> float:
        """Bytes one site sends over its link per token the fleet trains."""
        return self.wire_bytes / self.tokens_round

    def summary(self) -> dict:
        s = self.spec
        days = {"lockstep": self.tokens_needed / self.rate_lockstep / 86400,
                "sized": self.tokens_needed / self.rate_sized / 86400}
        return {"strategy": s.strategy, "inner_steps": s.steps_per_round,
                "fragments": s.fragments if s.strategy == "streaming" else 1, "compression": s.compression,
                "exchange": s.exchange, "topk": s.topk, "sites": len(self.sites), "balance": self.balance,
                "link": {"rtt_ms": s.link.rtt_ms, "gbit_s": s.link.gbit_s, "efficiency": s.link.efficiency},
                "exchange_gb": self.exchange_bytes / 1e9, "wire_gb": self.wire_bytes / 1e9,
                "exchange_s": self.exchange_s, "bytes_per_token": self.bytes_per_token,
                "wire_bytes_per_token": self.wire_bytes_per_token,
                "exposed_s_per_round": {"lockstep": self.exposed_lockstep, "sized": self.exposed_sized},
                "solo_tokens_per_s": self.solo_rate,
                "tokens_per_s": {"lockstep": self.rate_lockstep, "sized": self.rate_sized},
                "utilization": {"lockstep": self.rate_lockstep / self.solo_rate, "sized": self.rate_sized / self.solo_rate},
                "token_efficiency": self.token_efficiency, "tokens_needed": self.tokens_needed,
                "days": days, "cost": {k: v * 86400 * self.cost_per_s for k, v in days.items()},
                "utilization_definition": "tokens/s over the sites' solo tokens/s summed (no link, no sync)"}


def sites_summary(sites: list[Site], balance: str) -> list[dict]:
    """Per site: chips, its own layout and inner step under ``balance``, its solo rates."""
    return [{"site": s.name, "chips": " + ".join(f"{g.chips:,} {g.chip.key}" for g in s.lockstep.groups),
             "layout": s.estimate(balance).summary()["layout"], "batch_seqs": s.batch_seqs,
             "inner_step_s": s.estimate(balance).step_time_s,
             "tokens_per_s": {"lockstep": s.lockstep.tokens_per_s, "sized": s.sized.tokens_per_s}} for s in sites]


def lockstep_rate(shares: list[float], rates: list[float]) -> float:
    """Tokens/s of compute when every member trains its share each step and waits for the rest."""
    return sum(shares) / max(share / rate for share, rate in zip(shares, rates, strict=True))


def sized_rate(rates: list[float]) -> float:
    """Tokens/s of compute when each member's work is sized to its speed: the sum of the rates."""
    return sum(rates)


def synced_rate(tokens_round: float, compute_rate: float, exposed_s: float) -> float:
    """Tokens/s of a round of ``tokens_round`` computed at ``compute_rate`` plus ``exposed_s``."""
    return tokens_round / (tokens_round / compute_rate + exposed_s)


def plan_sites(model: ModelSpec, fleet: FleetSpec, chips: dict[str, Chip], layout: Layout, a: Assumptions,
               precision: str, tokens: float, global_batch_seqs: int) -> tuple[list[Site], int]:
    """Each site of ``fleet`` alone, with its share of the batch (module docstring), and the
    layouts estimated in all. A site of several groups is estimated twice: lock-step and sized."""
    check(layout.dp == 0 or len(fleet.sites()) == 1, "layout.dp", layout.dp,
          "0 (every replica a site holds) for a fleet over several sites")
    resolved = fleet.resolve(chips)
    total = sum(count for _, count, _ in resolved)
    out, fits = [], 0
    for name in fleet.sites():
        mine = [resolved[i] for i, g in enumerate(fleet.groups) if g.site == name]
        batch = global_batch_seqs * sum(count for _, count, _ in mine) / total
        found = {}
        for balance in ("slowest", "proportional") if len(mine) > 1 else ("slowest",):
            args = (model, mine, layout, a, precision, tokens, batch, balance)
            found[balance], n = search_layout(*args) if layout.searched else (estimate_training(*args), 1)
            fits += n
        lock = found["slowest"]
        out.append(Site(name=name, batch_seqs=batch, lockstep=lock, sized=found.get("proportional", lock)))
    return out, fits


def estimate_sync(sites: list[Site], spec: SyncSpec, model: ModelSpec, a: Assumptions, balance: str,
                  tokens: float, cost_per_s: float) -> SyncEstimate:
    """``spec`` over ``sites`` (module docstring); ``cost_per_s``: the whole fleet's price."""
    tokens_round = spec.steps_per_round * sum(s.batch_seqs for s in sites) * model.seq_len
    elements = model.total_params_b * 1e9

    lock = lockstep_rate([s.batch_seqs for s in sites], [s.lockstep.tokens_per_s for s in sites])
    sized = sized_rate([s.sized.tokens_per_s for s in sites])
    lock_x, sized_x = (exposed_per_round(spec, elements, len(sites), tokens_round / rate, a.grad_reduce_bytes,
                                         a.dp_overlap) for rate in (lock, sized))
    parts = spec.fragments if spec.strategy == "streaming" else 1
    one = exchange_bytes(elements / parts, spec, a.grad_reduce_bytes)
    eff = token_efficiency(spec.strategy, spec.steps_per_round, spec.compression, spec.exchange, spec.topk,
                           spec.quality)
    return SyncEstimate(spec=spec, sites=sites, balance=balance, tokens_round=tokens_round,
                        exchange_bytes=parts * one if len(sites) > 1 else 0.0,
                        wire_bytes=parts * wire_bytes(one, len(sites), spec),
                        exchange_s=parts * exchange_s(one, len(sites), spec),
                        exposed_lockstep=lock_x, exposed_sized=sized_x, solo_rate=sized,
                        rate_lockstep=synced_rate(tokens_round, lock, lock_x),
                        rate_sized=synced_rate(tokens_round, sized, sized_x), token_efficiency=eff,
                        tokens_needed=tokens / eff, cost_per_s=cost_per_s)


def candidates(spec: SyncSpec) -> list[SyncSpec]:
    """Every strategy x inner steps x compression x exchange x top-k of ``spec.search`` (ddp
    once, over the ring) whose form has a measured quality (``sync.unmeasured``); the streaming
    fragments capped at H."""
    out = []
    search = spec.search
    for strategy in search.strategies:
        if strategy == "ddp":
            out.append(dataclasses.replace(spec, strategy="ddp", compression="fp32", exchange="ring", topk=0.0))
            continue
        for h in search.inner_steps:
            for compression in search.compressions:
                for exchange in search.exchanges:
                    for k in search.topk:
                        if unmeasured(compression, exchange, k) is None:
                            out.append(dataclasses.replace(spec, strategy=strategy, inner_steps=h,
                                                           compression=compression, exchange=exchange, topk=k,
                                                           fragments=min(spec.fragments, h)))
    return out


def as_training_estimate(sites: list[Site], est: SyncEstimate, model: ModelSpec) -> TrainingEstimate:
    """The run ``est`` describes, as one estimate: every site's groups; the largest site's layout
    (``dp``: every site's replicas; per-site layouts in ``sites_summary``); an inner step of the
    global batch at the synced rate; the tokens needed for equal quality. MFU counts the tokens
    trained per second against every chip's dense BF16 peak; HFU the FLOPs each site executes
    (its recomputation) on its share of those tokens."""
    ests = [s.estimate(est.balance) for s in sites]
    largest = max(ests, key=lambda e: e.chips)
    tokens_per_step = sum(s.batch_seqs for s in sites) * model.seq_len
    step = tokens_per_step / est.rate
    steps = est.tokens_needed / tokens_per_step
    ideal = step * steps
    groups = [g for e in ests for g in e.groups]
    bf16 = sum(g.chips * g.chip.peak_flops("bf16") for g in groups)
    mfu = model_flops_per_token(model) * est.rate / bf16
    weights = [e.tokens_per_s if est.balance == "proportional" else e.tokens_per_step for e in ests]
    executed = sum(w * hardware_flops_per_token(model, e.layout.recompute) for w, e in zip(weights, ests, strict=True))
    hfu = executed / sum(weights) * est.rate / bf16
    fp8 = sum(g.chips * g.chip.peak_flops("fp8") for g in groups) if largest.precision == "fp8" else None
    return dataclasses.replace(
        largest, layout=dataclasses.replace(largest.layout, dp=sum(e.layout.dp for e in ests)),
        groups=groups, microbatches_per_step=sum(e.microbatches_per_step for e in ests),
        step_time_s=step, tokens_per_step=tokens_per_step, steps=steps, tokens=est.tokens_needed,
        tokens_per_s=est.rate, ideal_s=ideal, chips=sum(e.chips for e in ests),
        chip_hours=sum(e.chips for e in ests) * ideal / 3600,
        cost=sum(e.cost / e.ideal_s for e in ests) * ideal,
        energy_mwh=sum(e.energy_mwh / e.ideal_s for e in ests) * ideal,
        mfu_bf16=mfu, hfu_bf16=hfu, mfu_precision=mfu * bf16 / fp8 if fp8 else None)
