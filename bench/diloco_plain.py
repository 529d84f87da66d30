"""tenacia's low-communication strategies as one plain loop: diloco, streaming, the late outer steps, compression.

bench/diloco_gap.py's ``outer`` variant. One process, four members trained one after the other,
deterministic, no protocol: what tenacia/train/replicas/diloco.py does to the parameters, with
tenacia's own ``OuterState`` (the outer Nesterov step), ``Compressor`` (int8/int4/int2, top-k,
error feedback), the compressed exchange's stages (``compressed_reduce.py``),
``compute_gradients``, ``apply_update`` and inner AdamW. A round ``r`` (``Spec`` names each lever):

- fragment ``f = (r - 1) mod F`` of the parameters (``split_fragments``) is the round's;
- ``late = "none"`` (diloco, streaming without overlap): every member trains ``h`` inner steps of
  its contiguous quarter of the round's ``h x 32`` samples, then sends fragment ``f``'s
  pseudo-gradient (global minus local), compressed with its own residual; the outer step takes
  the mean of the decoded ones; every member's fragment ``f`` becomes the global one, the other
  fragments keep what it trained;
- ``late = "mix"`` (streaming's overlap): what is sent is fragment ``f`` at rest (the round's
  start), carrying the previous rounds' progress; after the inner steps the outer step lands and
  the member's fragment becomes ``mix x local + (1 - mix) x global``;
- ``late = "eager"`` (Kale et al. 2025, as ``OuterRounds.eager_start``): a member at rest holds the
  global parameters less its own progress of the last round (what it sends); its inner steps start
  where the outer step that progress would make lands; after them the real step lands and the
  member's fragment becomes the new global less the round's own progress.
  ``own`` (``Spec.own``, 1 = tenacia's) weighs the stand-in: ``own x d + (1 - own) x a`` with ``a``
  the last average the member applied (zeros before the first), e.g. ``1 / R``: its own fresh
  progress for its share of the average, the last known average for the others'.
- Round 1 under ``mix`` and ``eager`` sends nothing (no round trained yet): no outer step.
- ``delay`` (with ``late = "none"``, one fragment; tenacia's ``replicas.outer.delay``): the outer step
  lands on the global parameters at the round's end as under ``none``, but each member goes on from
  its own end-of-round parameters for the next round's first ``delay`` inner steps, then rebases
  them: global + (own now - own at the round's end). Round 1 starts from the global parameters.

Two evaluations at each budget: ``eval`` is what tenacia's run reports (``replicas/evals.py``: the
global parameters under diloco and the eager step with one fragment, else member 0's model, which
under ``mix``/``eager`` lacks the progress still in flight); ``eval_flushed`` is the model after one
more exchange of everything not yet averaged, in the run's format: the global parameters less
the mean of every member's decoded ``global - rest`` (a plain average: outer lr 1, no momentum),
what a run that ends with a synchronous exchange evaluates.

A compressed exchange (``Spec.exchange``, tenacia's ``replicas.outer.exchange``) is an all-gather
(each member's payload decoded and averaged) or a reduce-scatter: the stages of
``compressed_reduce.reduce_scatter_compressed`` run for the four members in turn, each member its
chunk's owner, with every token count 1 (even shares: the weighted sum over the total is the
mean), the sums' errors dropped as tenacia drops them (``Spec.sum_feedback``: folded instead).

Bytes: ``bytes_per_round`` counts payload bytes sent by all members (tenacia's transport: fp32 as
a direct reduce-scatter + all-gather, ``2 (R - 1) / R`` of the fragment's bytes per member, or the
whole to every peer at or under 64 KiB; compressed as an all-gather of packed payloads, ``R - 1``
copies per member, or as the reduce-scatter, a member's chunk from each peer and then every peer's
summed chunk, about ``2 (R - 1) / R`` copies, ``compressed_reduce.received_bytes``); the token count
(4 bytes) rides with each message. No control messages, no TCP headers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from tenacia.train.config import OuterConfig
from tenacia.train.outer import OuterState
from tenacia.train.replicas.compress import Compressor
from tenacia.train.replicas.compressed_reduce import (
    TOKEN_BYTES,
    assemble,
    chunk_bounds,
    received_bytes,
    reduce_chunk,
    scatter_parts,
)
from tenacia.train.second_moment import build_noise_corrected, noise_corrected_update
from tenacia.train.step import apply_update, build_optimizer, compute_gradients, lr_at
from tenacia.train.trainer import Trainer

MEMBERS, BATCH = 4, 8
SMALL_BYTES = 65536  # TransportConfig.small_bytes


@dataclass(frozen=True, kw_only=True)
class Spec:
    """One strategy of the plain loop (module docstring)."""

    h: int = 100  # inner steps per round
    lr: float = 2e-3  # inner AdamW peak rate (constant after warmup when floor = 1)
    floor: float = 1.0
    outer_lr: float = 0.7
    momentum: float = 0.9
    fragments: int = 1
    late: str = "none"  # "none", "mix", "eager"
    mix: float = 0.5
    own: float = 1.0  # eager: the weight of a member's own progress in the average's stand-in
    quantize: str = "fp32"
    topk: float = 0.0
    block: int = 256
    error_feedback: bool = True
    exchange: str = "all_gather"  # a compressed exchange: "all_gather" or "reduce_scatter"
    # reduce_scatter: True folds each sum's error into its owner's residual (over its tokens, here 1),
    # the alternative to tenacia's dropping it (compressed_reduce.py says why; no tenacia setting)
    sum_feedback: bool = False
    nc: bool = False  # noise-corrected inner second moment
    # late = "none" with one fragment: the delayed outer step (tenacia's replicas.outer.delay): a member's
    # next round's first `delay` inner steps start from its own end-of-round parameters and are then
    # rebased on the new global ones (global + own now - own at the round's end)
    delay: int = 0

    def __post_init__(self) -> None:
        if self.late not in ("none", "mix", "eager"):
            raise ValueError(f"late must be 'none', 'mix' or 'eager', not {self.late!r}")
        if self.exchange not in ("all_gather", "reduce_scatter"):
            raise ValueError(f"exchange must be 'all_gather' or 'reduce_scatter', not {self.exchange!r}")
        if self.delay and (self.late != "none" or self.fragments != 1 or not 0 < self.delay < self.h):
            raise ValueError(f"delay must be in [0, h) and needs late='none' and one fragment, not {self.delay!r}")

    def compressor(self) -> Compressor:
        return Compressor(self.quantize, self.block, self.topk, self.error_feedback)

    def bytes_per_round(self, numel: int) -> int:
        """Payload bytes all members send in a round of a fragment of ``numel`` values (module docstring)."""
        c = self.compressor()
        if c.lossless:
            n = 4 * (numel + 1)
            per_member = (MEMBERS - 1) * n if n <= SMALL_BYTES else 2 * (MEMBERS - 1) * n // MEMBERS
        elif self.exchange == "reduce_scatter":  # what all members receive is what all send
            return sum(received_bytes(c, numel, MEMBERS, k) for k in range(MEMBERS))
        else:
            per_member = (MEMBERS - 1) * (c.packed_bytes(numel) + TOKEN_BYTES)
        return MEMBERS * per_member


def ddp_bytes_per_token(numel: int, seq: int) -> float:
    """ddp's all-reduce of every gradient every step (a ring: ``2 (R - 1) / R`` of it per member)."""
    return MEMBERS * 2 * (MEMBERS - 1) * 4 * numel / MEMBERS / (MEMBERS * BATCH * seq)


class Members:
    """The four members' models, inner optimizers and error-feedback residuals."""

    def __init__(self, t: Trainer, spec: Spec, corrected_beta2: float | None):
        o = t.cfg.optim
        self.models = [copy.deepcopy(t.model) for _ in range(MEMBERS)]
        if spec.nc:
            self.opts = [build_noise_corrected(m, lr=spec.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2),
                                               eps=o.eps, reference=MEMBERS * BATCH) for m in self.models]
            for opt in self.opts:
                opt.corrected_beta2 = corrected_beta2
        else:
            self.opts = [build_optimizer(m, lr=spec.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2),
                                         eps=o.eps, device=t.device) for m in self.models]
        self.residual: list[dict[int, torch.Tensor]] = [{} for _ in range(MEMBERS)]

    def params(self, k: int) -> list[torch.Tensor]:
        return list(self.models[k].parameters())


def train(t: Trainer, spec: Spec, rounds: int, every: int, corrected_beta2: float | None = None) -> list[dict]:
    """``rounds`` rounds of ``spec`` from ``t``'s model; a row (round, tokens, eval, eval_flushed)
    after every ``every`` rounds."""
    dev, o = t.device, t.cfg.optim
    outer = OuterState(t.model, OuterConfig(lr=spec.outer_lr, momentum=spec.momentum), spec.fragments)
    ms, comp = Members(t, spec, corrected_beta2), spec.compressor()
    total = rounds * spec.h
    rate = lambda i: lr_at(i, lr=spec.lr, warmup_steps=o.warmup_steps, total_steps=total, min_lr_ratio=spec.floor)  # noqa: E731
    trained = False  # has a round been trained (its progress at rest, to send under mix/eager)?
    last = [torch.zeros_like(g) for g in outer.params]  # the last average applied, per parameter
    ends = None  # delay: each member's parameters at its last round's end
    rows = []
    for r in range(1, rounds + 1):
        f = (r - 1) % spec.fragments
        ids = outer.fragments[f]
        if spec.late != "none":  # the exchange carries the fragment at rest, before the inner steps
            sent = [at_rest(outer, ms.params(k), ids) for k in range(MEMBERS)]
            if spec.late == "eager":
                for k in range(MEMBERS):
                    eager_start(outer, ms.params(k), ids, spec.own, last)
        origins = [[p.detach().clone() for p in ms.params(k)] for k in range(MEMBERS)] if spec.late == "eager" else None
        inner_round(t, spec, ms, r, rate, dev, (lambda e=ends: rebase(outer, ms, e)) if ends else None)
        if spec.late == "none":
            sent = [at_rest(outer, ms.params(k), ids) for k in range(MEMBERS)]
        if spec.late == "none" or trained:
            avg = list(exchange(comp, spec, ms, f, sent, commit=True).split([outer.params[i].numel() for i in ids]))
            for i, d in zip(ids, avg, strict=True):
                last[i] = d.view_as(outer.params[i]).clone()
            outer.step(f, avg)
        with torch.no_grad():
            # delay: every member goes on from its own parameters, rebased `delay` inner steps in
            ends = [[p.detach().clone() for p in ms.params(k)] for k in range(MEMBERS)] if spec.delay else None
            for k in range(MEMBERS if not spec.delay else 0):
                for i in ids:
                    p, g = ms.params(k)[i], outer.params[i]
                    if spec.late == "none":
                        p.copy_(g)
                    elif spec.late == "mix":
                        p.copy_(p * spec.mix + g * (1 - spec.mix))
                    else:
                        p.copy_(g - (origins[k][i] - p))
        trained = True
        if r % every == 0:
            rows.append({"round": r, "tokens": r * spec.h * MEMBERS * BATCH * t.cfg.data.seq_len,
                         "eval": evaluate(t, spec, outer, ms), "eval_flushed": flushed(t, spec, outer, ms, comp)})
    return rows


def inner_round(t: Trainer, spec: Spec, ms: Members, r: int, rate, dev, land=None) -> None:  # noqa: ANN001
    """Every member's ``h`` inner steps of round ``r`` on its contiguous quarter of the round's samples;
    ``land()`` after the first ``spec.delay`` of them (the delayed outer step's rebase)."""
    h = spec.h
    round_ids = t.sampler.ids_at((r - 1) * h * MEMBERS * BATCH, h * MEMBERS * BATCH)
    clip = t.cfg.optim.grad_clip
    for j in range(h):
        if land is not None and spec.delay and j == spec.delay:
            land()
        i = (r - 1) * h + j + 1
        for k, (m, opt) in enumerate(zip(ms.models, ms.opts, strict=True)):
            q = round_ids[k * h * BATCH:(k + 1) * h * BATCH]
            chunk = q[j * BATCH:(j + 1) * BATCH]
            if spec.nc:
                half = len(chunk) // 2
                compute_gradients(m, t.data.train.get(chunk[:half]), BATCH, len(chunk), dev)
                opt.mark_half(half, len(chunk))
                compute_gradients(m, t.data.train.get(chunk[half:]), BATCH, len(chunk), dev)
                noise_corrected_update(m, opt, rate(i), clip)
            else:
                compute_gradients(m, t.data.train.get(chunk), BATCH, len(chunk), dev)
                apply_update(m, opt, rate(i), clip)


def rebase(outer: OuterState, ms: Members, ends: list[list[torch.Tensor]]) -> None:
    """``LocalRound._rebase``: each member's parameters, trained from its own ``ends``, become the
    global ones plus what it trained since (global + own now - own at the round's end)."""
    with torch.no_grad():
        for k in range(MEMBERS):
            for p, g, e in zip(ms.params(k), outer.params, ends[k], strict=True):
                p.copy_(g + (p - e))


def at_rest(outer: OuterState, params: list[torch.Tensor], ids: list[int]) -> torch.Tensor:
    """Fragment ``ids``' pseudo-gradient, global minus ``params``, flat."""
    with torch.no_grad():
        return torch.cat([(outer.params[i] - params[i]).reshape(-1) for i in ids])


def eager_start(outer: OuterState, params: list[torch.Tensor], ids: list[int], own: float = 1.0,
                last: list[torch.Tensor] | None = None) -> None:
    """``OuterRounds.eager_start``: fragment ``ids`` moves to where the outer step of the stand-in
    (its own progress, weighed with the last average by ``own``: module docstring) lands."""
    group = outer.optimizer.param_groups[0]
    lr, mu = group["lr"], group["momentum"]
    with torch.no_grad():
        for i in ids:
            g = outer.params[i]
            d = g - params[i]
            if own != 1.0:
                d = own * d + (1 - own) * last[i]
            buf = outer.optimizer.state.get(g, {}).get("momentum_buffer")
            b = d if buf is None else buf * mu + d
            params[i].copy_(g - lr * (d + mu * b if group["nesterov"] else b))


def exchange(comp: Compressor, spec: Spec, ms: Members, f: int, sent: list[torch.Tensor], commit: bool) -> torch.Tensor:
    """The mean of the members' ``sent`` as ``spec``'s exchange delivers it (each compressed with
    its residual); the new residuals kept when ``commit``."""
    if comp.lossless:
        return torch.stack(sent).sum(0) / MEMBERS
    if spec.exchange == "reduce_scatter":
        return scattered(comp, ms, f, sent, commit, spec.sum_feedback)
    out = torch.zeros_like(sent[0])
    for k, d in enumerate(sent):
        payload, residual = comp.encode(d, ms.residual[k].get(f))
        if commit and residual is not None:
            ms.residual[k][f] = residual
        out.add_(comp.decode(payload))
    return out / MEMBERS


def scattered(comp: Compressor, ms: Members, f: int, sent: list[torch.Tensor], commit: bool,
              feedback: bool = False) -> torch.Tensor:
    """``exchange``'s reduce-scatter: ``reduce_scatter_compressed``'s stages, member ``j`` the owner
    of chunk ``j``, every token count 1; the sums' errors dropped, or with ``feedback`` added to
    their owners' residuals."""
    bounds = chunk_bounds(sent[0].numel(), comp.block, MEMBERS)
    parts, residuals = zip(*(scatter_parts(comp, d, 1.0, ms.residual[k].get(f), bounds) for k, d in enumerate(sent)),
                           strict=True)
    summed = []
    for j, (lo, hi) in enumerate(bounds):
        packed, lost = reduce_chunk(comp, [parts[k][j] for k in range(MEMBERS)], hi - lo)
        if feedback and residuals[j] is not None:
            residuals[j][lo:hi].add_(lost)
        summed.append(packed)
    if commit and comp.error_feedback:
        for k in range(MEMBERS):
            ms.residual[k][f] = residuals[k]
    return assemble(comp, summed, bounds)[:-1] / MEMBERS


def load(t: Trainer, params: list[torch.Tensor]) -> float:
    with torch.no_grad():
        for p, v in zip(t.model.parameters(), params, strict=True):
            p.copy_(v)
    return t.evaluate()


def evaluate(t: Trainer, spec: Spec, outer: OuterState, ms: Members) -> float:
    """What tenacia's run reports (module docstring)."""
    reads_global = spec.fragments == 1 and spec.late in ("none", "eager")
    return load(t, outer.params if reads_global else ms.params(0))


def flushed(t: Trainer, spec: Spec, outer: OuterState, ms: Members, comp: Compressor) -> float:
    """The global parameters after one more exchange of all that is at rest, plainly averaged."""
    if spec.delay:  # the members' ends are averaged already: the global parameters hold everything sent
        return load(t, outer.params)
    params = [g.clone() for g in outer.params]
    for f, ids in enumerate(outer.fragments):
        mean = exchange(comp, spec, ms, f, [at_rest(outer, ms.params(k), ids) for k in range(MEMBERS)], commit=False)
        for i, d in zip(ids, mean.split([outer.params[i].numel() for i in ids]), strict=True):
            params[i] -= d.view_as(params[i])
    return load(t, params)
