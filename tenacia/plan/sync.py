"""The sync strategy between sites: what crosses the link, how often, and how much of it shows.

Inside a site replicas run synchronous data parallelism (``training.py``: a gradient reduction
every step over the catalog's links). Between sites the plan's strategy runs, as INTELLECT-1 and
OpenDiLoCo ran: every site one member of the outer exchange.

- ``ddp``: the gradient crosses every step (``assumptions.grad_reduce_bytes`` per element), ring
  all-reduce; as inside a site, a share ``assumptions.dp_overlap`` of it runs behind the step's
  compute (at most the whole compute).
- ``diloco``: ``inner_steps`` (H) local steps, then one blocking exchange of the pseudo-gradient
  (every parameter): a round pays it whole.
- ``streaming``: the parameters in ``fragments`` (F) fragments, each exchanged once per H steps,
  in turn (one every H/F steps), each exchange running behind up to ``overlap_steps`` (tau)
  inner steps (0: until the next fragment's turn, H/F). A round of H steps exposes
  max(F x max(0, t_fragment - tau x t_step), F x t_fragment - H x t_step): a fragment late
  past its window, or the link busier than the round is long. Default tau = 5, an ASSUMPTION:
  Streaming DiLoCo (arXiv 2501.18512) overlaps a fragment's exchange with a few inner steps, and
  a longer overlap merges staler updates at a quality cost it gives in no form to take here.

Bytes per element of the outer exchange (``compression``): fp32 4, int8 1, int4 0.5, plus one
fp32 scale per ``scale_block`` elements when quantized. ``topk`` > 0 keeps that fraction of the
elements (error feedback keeps the rest for later rounds) and adds ``index_bytes`` per kept
element; the kept values are exchanged with a ring all-gather (``links.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check, check_choice, check_finite
from .links import Link, ring_allgather_s, ring_allreduce_s
from .quality import Quality

STRATEGIES = ("ddp", "diloco", "streaming")
COMPRESSIONS = ("fp32", "int8", "int4")
VALUE_BYTES = {"fp32": 4.0, "int8": 1.0, "int4": 0.5}
SCALE_BYTES = 4.0  # one fp32 scale per block of quantized values


@dataclass(kw_only=True, slots=True)
class SyncSearch:
    """Candidates ``tenacia plan sync`` tries: every strategy x inner steps x compression x
    top-k (ddp once: it has neither inner steps nor outer compression)."""

    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    inner_steps: list[int] = field(default_factory=lambda: [10, 30, 100, 300, 1000])
    compressions: list[str] = field(default_factory=lambda: list(COMPRESSIONS))
    topk: list[float] = field(default_factory=lambda: [0.0])

    def __post_init__(self) -> None:
        for name in ("strategies", "inner_steps", "compressions", "topk"):
            check(bool(getattr(self, name)), name, getattr(self, name), "a non-empty list")
        for s in self.strategies:
            check_choice("strategies", s, STRATEGIES)
        for c in self.compressions:
            check_choice("compressions", c, COMPRESSIONS)
        check(all(h >= 1 for h in self.inner_steps), "inner_steps", self.inner_steps, "inner steps >= 1 each")
        check(all(0 <= k < 1 for k in self.topk), "topk", self.topk,
              "fractions of the elements kept in [0, 1) each (0: dense)")


@dataclass(kw_only=True, slots=True)
class SyncSpec:
    """How sites synchronize (module docstring)."""

    strategy: str = "ddp"
    inner_steps: int = 100  # H: local steps per outer exchange (diloco, streaming)
    fragments: int = 4  # F: streaming only
    overlap_steps: int = 5  # streaming: tau, inner steps a fragment's exchange runs behind (0: H/F)
    compression: str = "fp32"  # outer exchange: fp32, int8 or int4
    topk: float = 0.0  # fraction of the elements sent each exchange (0: all, dense)
    scale_block: int = 128  # quantized elements per fp32 scale
    index_bytes: float = 4.0  # per kept element under top-k (an int32 index)
    link: Link = field(default_factory=Link)
    quality: Quality = field(default_factory=Quality)
    search: SyncSearch = field(default_factory=SyncSearch)

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("compression", self.compression, COMPRESSIONS)
        check(self.inner_steps >= 1, "inner_steps", self.inner_steps, "local steps per exchange >= 1")
        check(self.fragments >= 1, "fragments", self.fragments, "fragments >= 1")
        check(self.strategy != "streaming" or self.fragments <= self.inner_steps, "fragments", self.fragments,
              f"at most inner_steps={self.inner_steps}: one fragment's turn per H/F inner steps")
        check(self.overlap_steps >= 0, "overlap_steps", self.overlap_steps, "inner steps >= 0 (0: H/F)")
        check(0 <= self.topk < 1, "topk", self.topk, "a fraction of the elements kept in [0, 1) (0: dense)")
        check(self.scale_block >= 1, "scale_block", self.scale_block, "elements per scale >= 1")
        check(self.index_bytes > 0, "index_bytes", self.index_bytes, "bytes per index > 0")
        if self.strategy == "ddp":
            check(self.compression == "fp32", "compression", self.compression,
                  "'fp32' with strategy 'ddp' (its gradients cross at assumptions.grad_reduce_bytes; "
                  "compression is the outer exchange of diloco and streaming)")
            check(self.topk == 0, "topk", self.topk, "0 with strategy 'ddp' (top-k applies to diloco and streaming)")

    @property
    def steps_per_round(self) -> int:
        """Inner steps per round: 1 for ddp, H otherwise."""
        return 1 if self.strategy == "ddp" else self.inner_steps


def bytes_per_element(compression: str, scale_block: int) -> float:
    """Bytes one dense element of the outer exchange costs, scales included."""
    value = VALUE_BYTES[compression]
    return value if compression == "fp32" else value + SCALE_BYTES / scale_block


def exchange_bytes(elements: float, spec: SyncSpec, grad_bytes: float) -> float:
    """Bytes one site contributes to one exchange of ``elements`` values (module docstring)."""
    if spec.strategy == "ddp":
        return elements * grad_bytes
    if spec.topk > 0:
        kept = elements * spec.topk
        return kept * (bytes_per_element(spec.compression, spec.scale_block) + spec.index_bytes)
    return elements * bytes_per_element(spec.compression, spec.scale_block)


def exchange_s(nbytes: float, sites: int, spec: SyncSpec) -> float:
    """Seconds one exchange of ``nbytes`` per site takes: ring all-gather under top-k, ring
    all-reduce otherwise."""
    if spec.topk > 0:
        return ring_allgather_s(nbytes, sites, [spec.link])
    return ring_allreduce_s(nbytes, sites, [spec.link])


def exposed_per_round(spec: SyncSpec, elements: float, sites: int, compute_s: float, grad_bytes: float,
                      dp_overlap: float) -> float:
    """Seconds of cross-site communication a round of ``spec.steps_per_round`` inner steps, whose
    compute takes ``compute_s``, cannot hide (module docstring)."""
    if spec.strategy == "streaming":
        frag = exchange_s(exchange_bytes(elements / spec.fragments, spec, grad_bytes), sites, spec)
        window = (spec.overlap_steps or spec.inner_steps / spec.fragments) * compute_s / spec.inner_steps
        return max(spec.fragments * max(0.0, frag - window), spec.fragments * frag - compute_s, 0.0)
    whole = exchange_s(exchange_bytes(elements, spec, grad_bytes), sites, spec)
    if spec.strategy == "ddp":
        return whole - min(dp_overlap * whole, compute_s)
    return whole
