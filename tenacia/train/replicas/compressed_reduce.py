"""A compressed outer exchange (``compress.py``), in the two forms ``replicas.outer.exchange`` names.

Every member of a quorum of ``R`` holds a pseudo-gradient ``d`` of ``n`` values and its token
count ``t``; every member leaves with ``[sum_i t_i d_i, sum_i t_i]``, the same bits everywhere.
Codes cannot be summed by an all-reduce (int8 values overflow, and each block has its own scale).

``all_gather`` (``all_gather_compressed``): each member compresses ``d`` with its residual, the
packed payloads and token counts are all-gathered (``Gather``, ``group.gloo_all_gather``), and
each member dequantizes and sums them in rank order. One one-way trip; ``R - 1`` payloads received.

``reduce_scatter`` (``reduce_scatter_compressed``), two all-to-alls over the quorum's group
(``AllToAll``, ``group.all_to_all``: gloo's or the long-link transport's ``alltoall_base``):

1. reduce-scatter: the ``n`` values are cut into ``R`` chunks on block boundaries
   (``chunk_bounds``: chunk ``j`` is blocks ``[j B / R, (j + 1) B / R)`` of the ``B = ceil(n /
   block)``; a chunk may be empty when ``B < R``). Each member compresses ``d + residual`` chunk
   by chunk (``scatter_parts``: the codes of compressing it whole, since no block straddles two
   chunks) and sends chunk ``j``'s packed payload, with ``t``, to member ``j``;
2. member ``j`` dequantizes the ``R`` payloads of its chunk and sums them weighted, in rank order
   (``weighted_sum``): ``S_j = sum_i t_i d_ij``, ``T = sum_i t_i``; it compresses ``S_j`` in the
   same format, with no residual (below; ``reduce_chunk``), and sends that payload, with ``T``, to
   every member;
3. all-gather: every member, ``j`` included, dequantizes the ``R`` summed chunks (``assemble``).
   Chunk ``j``'s sum was quantized once, by member ``j``, and everyone decodes the same bytes: the
   same bits on every member.

Error feedback: the first stage's only, the all-gather's: what member ``i``'s payload did not
carry, ``(d_i + r_i) - decoded``, kept only when the round commits (``OuterRounds.apply``); a
member lost mid-exchange makes either all-to-all raise, the round is discarded, and nothing of it
is kept. What member ``j``'s re-quantization loses, ``e_j = S_j - decode(compress(S_j))``, is
dropped. A residual of the sum kept by the chunk's owner would be lost or land on the wrong values
when the quorum's size or ranks change (the chunks move); the alternative that survives that,
``e_j / t_j`` folded into member ``j``'s own residual (so its next ``t_j (d_j + r_j)`` sends
``e_j`` back), trained worse in every cell measured: dense int2, diloco H = 100, Nesterov 0.7/0.9,
seeds 1 and 2 at 1-4x the bench's budget, 0.1 to 1.8 points of eval loss (docs/benchmarks.md,
"Probes of 2026-12-04 18:45-19:18"; ``bench/diloco_gap.py --sum-feedback``). Dropping ``e_j`` is
a bias, not a delay: ``tests/train/replicas/test_compressed_reduce.py`` sends the same int2
inputs for 40 rounds, and what arrived is 21% short of what was sent (7% with the fold).

Bytes a member receives under ``reduce_scatter`` (``received_bytes``): its chunk from ``R - 1``
peers, then ``R - 1`` summed chunks, about ``2 (R - 1) / R`` compressed copies of the tensor against ``R - 1`` for the
all-gather (``R = 4``: 1.5 against 3), plus 4 bytes of tokens in each message. The price: two
one-way trips instead of one, and the sum quantized a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .compress import Compressor
from .group import Wait, all_to_all, gloo_all_gather

# every member's packed payload, in rank order
Gather = Callable[[torch.Tensor, Any, Wait, Callable[..., None]], list[torch.Tensor]]
# parts[k] to member k; what each member k sent here (sizes[k] bytes), in rank order
AllToAll = Callable[[list[torch.Tensor], list[int], Any, Wait, Callable[..., None]], list[torch.Tensor]]
TOKEN_BYTES = 4  # the float32 token count (or total) behind every payload


def weighted_sum(payloads: list[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """``[sum_i t_i d_i, sum_i t_i]`` of (pseudo-gradient, tokens) pairs, summed in their order."""
    total = torch.zeros(payloads[0][0].numel() + 1, dtype=torch.float32, device=payloads[0][0].device)
    for d, t in payloads:
        if t:
            total[:-1].add_(d, alpha=t)
            total[-1] += t
    return total


def with_tokens(packed: torch.Tensor, tokens: float) -> torch.Tensor:
    """A packed payload with a float32 token count behind it."""
    return torch.cat([packed, torch.tensor([tokens], dtype=torch.float32, device=packed.device).view(torch.uint8)])


def split_tokens(buf: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``with_tokens`` reversed."""
    return buf[:-TOKEN_BYTES], float(buf[-TOKEN_BYTES:].clone().view(torch.float32))


def chunk_bounds(n: int, block: int, world: int) -> list[tuple[int, int]]:
    """Each member's chunk ``[lo, hi)`` of ``n`` values, whole blocks but the last (module docstring)."""
    blocks = -(-n // block)
    return [(min(n, j * blocks // world * block), min(n, (j + 1) * blocks // world * block)) for j in range(world)]


def scatter_parts(comp: Compressor, d: torch.Tensor, tokens: float, residual: torch.Tensor | None,
                  bounds: list[tuple[int, int]]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Stage 1: chunk ``j``'s packed payload of ``d + residual`` with ``tokens``, for member ``j``;
    and the first stage's new residual (None without error feedback)."""
    parts, left = [], []
    for lo, hi in bounds:
        payload, rest = comp.encode(d[lo:hi], None if residual is None else residual[lo:hi])
        parts.append(with_tokens(comp.pack(payload), tokens))
        left.append(rest)
    return parts, torch.cat(left) if comp.error_feedback else None


def reduce_chunk(comp: Compressor, received: list[torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2 at the chunk's owner: the ``R`` packed payloads of its chunk of ``n`` values, in rank
    order -> the packed compressed sum with ``T`` behind it, and what compressing it lost (``S - decoded``)."""
    parts = [(comp.decode(comp.unpack(b, n)), t) for b, t in map(split_tokens, received)]
    total = weighted_sum(parts)  # [S, T]
    payload, _ = comp.encode(total[:-1])
    return with_tokens(comp.pack(payload), float(total[-1])), total[:-1] - comp.decode(payload)


def assemble(comp: Compressor, summed: list[torch.Tensor], bounds: list[tuple[int, int]]) -> torch.Tensor:
    """Stage 3: ``[S, T]`` from every owner's packed summed chunk, in rank order."""
    chunks, totals = zip(*map(split_tokens, summed), strict=True)
    values = [comp.decode(comp.unpack(b, hi - lo)) for b, (lo, hi) in zip(chunks, bounds, strict=True)]
    return torch.cat([*values, torch.tensor([totals[0]], dtype=torch.float32, device=values[0].device)])


def chunk_bytes(comp: Compressor, bounds: list[tuple[int, int]]) -> list[int]:
    """Bytes of each chunk's message (a packed payload and its token count)."""
    return [comp.packed_bytes(hi - lo) + TOKEN_BYTES for lo, hi in bounds]


def received_bytes(comp: Compressor, n: int, world: int, rank: int) -> int:
    """Bytes member ``rank`` receives in one exchange of ``n`` values: its chunk from each peer,
    then every peer's summed chunk."""
    sizes = chunk_bytes(comp, chunk_bounds(n, comp.block, world))
    return (world - 1) * sizes[rank] + sum(sizes) - sizes[rank]


def all_gather_compressed(comp: Compressor, d: torch.Tensor, tokens: float, residual: torch.Tensor | None,
                          group: Any, wait: Wait, wake: Callable[..., None],
                          gather: Gather = gloo_all_gather) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[sum_i t_i d_i, sum_i t_i]`` over ``group`` by an all-gather of every member's payload
    (module docstring) and this member's new residual (None without error feedback)."""
    payload, new_residual = comp.encode(d, residual)
    got = gather(with_tokens(comp.pack(payload), tokens), group, wait, wake)
    return weighted_sum([(comp.decode(comp.unpack(b, d.numel())), t) for b, t in map(split_tokens, got)]), new_residual


def reduce_scatter_compressed(comp: Compressor, d: torch.Tensor, tokens: float, residual: torch.Tensor | None,
                              group: Any, wait: Wait, wake: Callable[..., None],
                              exchange: AllToAll = all_to_all) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[sum_i t_i d_i, sum_i t_i]`` over ``group`` (module docstring) and this member's new
    residual (the first stage's; None without error feedback); ``residual`` is not changed. Raises
    what the group raises when a member is lost."""
    world, rank = group.size(), group.rank()
    bounds = chunk_bounds(d.numel(), comp.block, world)
    sizes = chunk_bytes(comp, bounds)
    parts, new_residual = scatter_parts(comp, d, tokens, residual, bounds)
    lo, hi = bounds[rank]
    summed, _ = reduce_chunk(comp, exchange(parts, [sizes[rank]] * world, group, wait, wake), hi - lo)
    return assemble(comp, exchange([summed] * world, sizes, group, wait, wake), bounds), new_residual
