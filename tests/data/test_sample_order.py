"""The sampler: a fixed stream of sample ids, resumable from three integers, split across members."""

from __future__ import annotations

import json

import pytest

from tenacia.data.sampler import Sampler, shard, shard_sizes


def test_order_is_pinned() -> None:
    # Golden values: the order must not change across machines or NumPy versions, or a resumed
    # run on another machine would draw other samples than the ledger expects.
    sampler = Sampler(10, seed=0)
    assert sampler.order(0).tolist() == [3, 2, 1, 8, 6, 0, 7, 4, 5, 9]
    assert sampler.order(1).tolist() == [7, 4, 5, 1, 9, 8, 6, 2, 0, 3]
    assert Sampler(10, seed=1).order(0).tolist() == [9, 2, 4, 7, 5, 0, 8, 6, 3, 1]


def test_each_epoch_is_a_permutation_and_epochs_differ() -> None:
    sampler = Sampler(1000, seed=7)
    orders = [sampler.order(epoch).tolist() for epoch in range(3)]
    assert all(sorted(order) == list(range(1000)) for order in orders)
    assert orders[0] != orders[1] != orders[2]
    assert Sampler(1000, seed=7).order(2).tolist() == orders[2]  # from (seed, epoch) alone
    assert Sampler(1000, seed=8).order(0).tolist() != orders[0]


def test_peek_does_not_advance_and_wraps_epochs() -> None:
    sampler = Sampler(10, seed=0)
    sampler.advance(8)
    assert sampler.positions(4) == range(8, 12)
    batch = sampler.peek(4)
    assert batch == sampler.peek(4)  # a failed step retries the same ids
    assert batch == sampler.order(0)[8:].tolist() + sampler.order(1)[:2].tolist()
    assert sampler.position == 8 and sampler.epoch == 0
    sampler.advance(4)
    assert sampler.position == 12 and sampler.epoch == 1
    assert sampler.ids_at(0, 25) == sampler.order(0).tolist() + sampler.order(1).tolist() + \
        sampler.order(2)[:5].tolist()


def test_resume_mid_epoch_equals_a_straight_run() -> None:
    straight = Sampler(23, seed=3)
    expected = []
    for _ in range(12):
        expected.append(straight.peek(7))
        straight.advance(7)

    first = Sampler(23, seed=3)
    got = []
    for _ in range(5):  # 35 samples: the crash comes mid-epoch 1
        got.append(first.peek(7))
        first.advance(7)
    saved = json.loads(json.dumps(first.state_dict()))  # what a checkpoint manifest holds
    assert saved == {"seed": 3, "num_samples": 23, "position": 35}
    resumed = Sampler(23, seed=3)
    resumed.load_state_dict(saved)
    for _ in range(7):
        got.append(resumed.peek(7))
        resumed.advance(7)
    assert got == expected


def test_state_from_other_data_is_rejected() -> None:
    sampler = Sampler(100, seed=1)
    with pytest.raises(ValueError, match=r"num_samples=99, seed=1, but this run has num_samples=100, seed=1"):
        sampler.load_state_dict({"seed": 1, "num_samples": 99, "position": 5})
    with pytest.raises(ValueError, match=r"seed=2.*another data\.seed"):
        sampler.load_state_dict({"seed": 2, "num_samples": 100, "position": 5})
    with pytest.raises(ValueError, match=r"'position' must be an integer >= 0, got -1"):
        sampler.load_state_dict({"seed": 1, "num_samples": 100, "position": -1})
    with pytest.raises(ValueError, match=r"'position' must be an integer >= 0, got None"):
        sampler.load_state_dict({"seed": 1, "num_samples": 100})
    assert sampler.position == 0  # nothing half-loaded
    with pytest.raises(ValueError, match="num_samples > 0"):
        Sampler(0, seed=1)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
def test_shards_cover_the_batch_exactly(world: int) -> None:
    for size in range(0, 13):
        ids = list(range(100, 100 + size))
        shares = [shard(ids, rank, world) for rank in range(world)]
        assert [x for share in shares for x in share] == ids  # contiguous, in rank order, nothing lost
        assert [len(share) for share in shares] == shard_sizes(size, world)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shard_sizes(7, 3) == [3, 2, 2]
    with pytest.raises(ValueError, match=rf"rank must be in 0\.\.{world - 1}"):
        shard([1, 2], world, world)
