"""A deterministic, resumable order over the training samples, and its split across replicas.

The sample stream is an infinite sequence of positions 0, 1, 2, ... Position ``p`` lies in epoch
``p // N`` (``N`` samples) and takes sample id ``order(epoch)[p % N]``, where ``order(epoch)`` is a
permutation of ``0..N-1`` drawn from ``(seed, epoch)`` alone. The sampler's whole state is the
next position, so a checkpoint stores three integers (``state_dict``) and a resumed run draws
exactly the batches a straight run would have drawn.

``order(epoch)`` sorts ``N`` raw 64-bit outputs of NumPy's PCG64 seeded with
``SeedSequence([seed, epoch])`` (a stable sort: ties keep id order). Only the bit generator's raw
stream is used, which NumPy keeps fixed across versions and platforms, not a distribution method
such as ``Generator.permutation`` whose algorithm NumPy may change: the order is the same on
every machine.

Protocol with the trainer: ``ids = sampler.peek(batch)`` picks the global batch without moving;
the step runs; only when the step commits does the trainer call ``sampler.advance(batch)``. A step
that fails is retried with the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class Sampler:
    """Stream positions -> sample ids for ``num_samples`` samples, seeded by ``seed``."""

    def __init__(self, num_samples: int, seed: int):
        if num_samples <= 0:
            raise ValueError(f"Sampler needs num_samples > 0, got {num_samples}")
        if seed < 0:
            raise ValueError(f"Sampler needs seed >= 0, got {seed}")
        self.num_samples = num_samples
        self.seed = seed
        self.position = 0  # the next position to consume
        self._orders: dict[int, np.ndarray] = {}  # the last two epochs' orders

    @property
    def epoch(self) -> int:
        return self.position // self.num_samples

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of sample ids for ``epoch`` (shape (num_samples,), int64; read-only)."""
        if epoch not in self._orders:
            bits = np.random.PCG64(np.random.SeedSequence([self.seed, epoch]))
            keys = bits.random_raw(self.num_samples)  # uint64, stable across NumPy versions
            order = np.argsort(keys, kind="stable")
            order.flags.writeable = False
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}  # keep the previous
            self._orders[epoch] = order
        return self._orders[epoch]

    def ids_at(self, start: int, count: int) -> list[int]:
        """Sample ids at positions ``start .. start + count - 1`` (any positions, not only the next)."""
        if start < 0 or count < 0:
            raise ValueError(f"positions must be >= 0 and count >= 0, got start={start} count={count}")
        ids: list[int] = []
        position, end = start, start + count
        while position < end:
            epoch, offset = divmod(position, self.num_samples)
            take = min(end - position, self.num_samples - offset)
            ids += self.order(epoch)[offset: offset + take].tolist()
            position += take
        return ids

    def positions(self, count: int) -> range:
        """The next ``count`` positions, without advancing."""
        return range(self.position, self.position + count)

    def peek(self, count: int) -> list[int]:
        """Ids of the next ``count`` samples (the next global batch), without advancing."""
        return self.ids_at(self.position, count)

    def advance(self, count: int) -> None:
        """Consume ``count`` samples: call once the step that used them has committed."""
        if count < 0:
            raise ValueError(f"advance needs count >= 0, got {count}")
        self.position += count

    def state_dict(self) -> dict[str, int]:
        """The whole state, JSON-serialisable."""
        return {"seed": self.seed, "num_samples": self.num_samples, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state``; it must come from a sampler with the same seed and num_samples."""
        for key in ("seed", "num_samples", "position"):
            value = state.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"sampler state: {key!r} must be an integer >= 0, got {value!r}")
        if state["num_samples"] != self.num_samples or state["seed"] != self.seed:
            raise ValueError(
                f"sampler state is for num_samples={state['num_samples']}, seed={state['seed']}, but this "
                f"run has num_samples={self.num_samples}, seed={self.seed}: the checkpoint was made on "
                f"other data or with another data.seed, so its position means nothing here")
        self.position = state["position"]


def shard_sizes(total: int, world: int) -> list[int]:
    """How many of ``total`` samples each of ``world`` members holds: the first ``total % world``
    hold one more. These are the weights to average members' gradients by."""
    if world <= 0:
        raise ValueError(f"world must be a positive integer, got {world}")
    base, extra = divmod(total, world)
    return [base + (1 if rank < extra else 0) for rank in range(world)]


def shard(ids: Sequence[int], rank: int, world: int) -> list[int]:
    """Member ``rank``'s contiguous share of ``ids`` among ``world`` members; the shares, in rank
    order, concatenate to ``ids`` and their sizes differ by at most one (``shard_sizes``)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in 0..{world - 1} for world={world}, got {rank}")
    sizes = shard_sizes(len(ids), world)
    start = sum(sizes[:rank])
    return list(ids[start: start + sizes[rank]])
