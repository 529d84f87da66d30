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

Bytes per element of the outer exchange (``compression``): fp32 4, int8 1, int4 0.5, int2 0.25
(four levels at +-rms/2, +-3 rms/2 of a block, four codes a byte: ``tenacia/train/replicas/
compress.py``), plus one fp32 scale per ``scale_block`` elements when quantized. ``topk`` > 0
keeps that fraction of the elements (error feedback keeps the rest for later rounds) and adds
``index_bytes`` per kept element.

How the payloads travel (``exchange``; the collectives and their alpha-beta cost: ``links.py``):

- ``ring``: a ring all-reduce of dense values (gloo's; quantized values re-quantized at every
  hop, as INTELLECT-1's int8 ring), a ring all-gather of top-k's (index, value) pairs; ddp's
  gradients always take it. Dense int2 through it is refused: its R-1 re-quantizations of int2
  sums were not measured (``quality.py``).
- ``all_gather``: tenacia's ``replicas.outer.exchange = "all_gather"``
  (``tenacia/train/replicas/compressed_reduce.py``): every site's payload to every other in one
  one-way trip, R-1 payloads sent and received a site; quantized once.
- ``reduce_scatter``: tenacia's ``"reduce_scatter"``: chunk j of every site's payload to site j,
  summed and re-quantized there, then sent to every site: two one-way trips, 2(R-1)/R payloads a
  site, quantized twice (``quality.py`` charges int2's second quantization). Dense only: top-k
  sums re-sparsified at the owner were not measured.

The 4-byte token count behind each of tenacia's messages is left out (R of them, against
payloads of gigabytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check, check_choice, check_finite
from .links import Link, collective_s, copies
from .quality import Quality

STRATEGIES = ("ddp", "diloco", "streaming")
COMPRESSIONS = ("fp32", "int8", "int4", "int2")
EXCHANGES = ("ring", "all_gather", "reduce_scatter")
VALUE_BYTES = {"fp32": 4.0, "int8": 1.0, "int4": 0.5, "int2": 0.25}
SCALE_BYTES = 4.0  # one fp32 scale per block of quantized values


@dataclass(kw_only=True, slots=True)
class SyncSearch:
    """Candidates ``tenacia plan sync`` tries: every strategy x inner steps x compression x
    exchange x top-k that ``SyncSpec`` accepts (ddp once: it has neither inner steps nor outer
    compression; dense int2 not over the ring, top-k not through the reduce-scatter)."""

    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    inner_steps: list[int] = field(default_factory=lambda: [10, 30, 100, 300, 1000])
    compressions: list[str] = field(default_factory=lambda: list(COMPRESSIONS))
    exchanges: list[str] = field(default_factory=lambda: list(EXCHANGES))
    topk: list[float] = field(default_factory=lambda: [0.0])

    def __post_init__(self) -> None:
        for name in ("strategies", "inner_steps", "compressions", "exchanges", "topk"):
            check(bool(getattr(self, name)), name, getattr(self, name), "a non-empty list")
        for s in self.strategies:
            check_choice("strategies", s, STRATEGIES)
        for c in self.compressions:
            check_choice("compressions", c, COMPRESSIONS)
        for e in self.exchanges:
            check_choice("exchanges", e, EXCHANGES)
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
    compression: str = "fp32"  # outer exchange: fp32, int8, int4 or int2
    exchange: str = "ring"  # how it travels: ring, all_gather or reduce_scatter (module docstring)
    topk: float = 0.0  # fraction of the elements sent each exchange (0: all, dense)
    # quantized elements per fp32 scale, and top-k's block: the trainer's replicas.outer.block
    scale_block: int = 256
    # per kept element under top-k: its position in its block, a uint8 for blocks of at most 256
    # as the trainer sends it (replicas/compress.py; int16 up to 32,768)
    index_bytes: float = 1.0
    link: Link = field(default_factory=Link)
    quality: Quality = field(default_factory=Quality)
    search: SyncSearch = field(default_factory=SyncSearch)

    def __post_init__(self) -> None:
        check_finite(self)
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("compression", self.compression, COMPRESSIONS)
        check_choice("exchange", self.exchange, EXCHANGES)
        check(self.inner_steps >= 1, "inner_steps", self.inner_steps, "local steps per exchange >= 1")
        check(self.fragments >= 1, "fragments", self.fragments, "fragments >= 1")
        check(self.strategy != "streaming" or self.fragments <= self.inner_steps, "fragments", self.fragments,
              f"at most inner_steps={self.inner_steps}: one fragment's turn per H/F inner steps")
        check(self.overlap_steps >= 0, "overlap_steps", self.overlap_steps, "inner steps >= 0 (0: H/F)")
        check(0 <= self.topk < 1, "topk", self.topk, "a fraction of the elements kept in [0, 1) (0: dense)")
        check(self.scale_block >= 1, "scale_block", self.scale_block, "elements per scale >= 1")
        need = 1 if self.scale_block <= 256 else 2 if self.scale_block <= 32768 else 4
        check(self.index_bytes >= need, "index_bytes", self.index_bytes,
              f">= {need}: a position in a block of scale_block={self.scale_block} elements takes {need} byte(s)")
        if self.strategy == "ddp":
            check(self.compression == "fp32", "compression", self.compression,
                  "'fp32' with strategy 'ddp' (its gradients cross at assumptions.grad_reduce_bytes; "
                  "compression is the outer exchange of diloco and streaming)")
            check(self.topk == 0, "topk", self.topk, "0 with strategy 'ddp' (top-k applies to diloco and streaming)")
            check(self.exchange == "ring", "exchange", self.exchange,
                  "'ring' with strategy 'ddp' (its gradients cross in a ring all-reduce)")
        allowed = unmeasured(self.compression, self.exchange, self.topk)
        check(allowed is None, "exchange", self.exchange, allowed or "")

    @property
    def steps_per_round(self) -> int:
        """Inner steps per round: 1 for ddp, H otherwise."""
        return 1 if self.strategy == "ddp" else self.inner_steps


def unmeasured(compression: str, exchange: str, topk: float) -> str | None:
    """The exchanges allowed instead, with why, when ``compression`` through ``exchange`` has no
    measured quality (module docstring); None when it has."""
    if compression == "int2" and exchange == "ring" and topk == 0:
        return ("'all_gather' or 'reduce_scatter' with dense int2 (a ring all-reduce re-quantizes int2 sums "
                "at every hop: not measured)")
    if exchange == "reduce_scatter" and topk > 0:
        return "'ring' or 'all_gather' with top-k (top-k sums re-sparsified at their owner: not measured)"
    return None


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


def collective(spec: SyncSpec) -> str:
    """The collective (``links.COLLECTIVES``) that carries ``spec``'s exchange (module docstring)."""
    if spec.exchange == "ring":
        return "ring_allgather" if spec.topk > 0 else "ring_allreduce"
    return "allgather" if spec.exchange == "all_gather" else "reduce_scatter"


def wire_bytes(nbytes: float, sites: int, spec: SyncSpec) -> float:
    """Bytes one site sends (and receives) over its link in one exchange of ``nbytes`` per site."""
    return copies(collective(spec), sites) * nbytes


def exchange_s(nbytes: float, sites: int, spec: SyncSpec) -> float:
    """Seconds one exchange of ``nbytes`` per site takes over ``sites`` sites (``links.py``)."""
    return collective_s(collective(spec), nbytes, sites, [spec.link])


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
