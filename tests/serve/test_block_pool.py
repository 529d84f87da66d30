"""Block pool: reference counts, prefix matching, eviction of cached blocks (no model needed)."""

from __future__ import annotations

import pytest

from tenacia.serve.engine.block_pool import BlockPool


def admit(pool: BlockPool, tokens: list[int]) -> tuple[list[int], int]:
    """What the scheduler does for a new sequence: cached prefix + fresh blocks; returns
    (table, tokens already cached)."""
    hits = pool.match(tokens)
    table = hits + pool.allocate(pool.blocks_for(len(tokens)) - len(hits))
    return table, len(hits) * pool.block_size


def test_shared_prefix_is_matched_by_whole_blocks_and_never_covers_the_last_token():
    pool = BlockPool(num_blocks=16, block_size=4)
    a = list(range(10))  # blocks [0..3] [4..7] and a partial one
    table_a, cached = admit(pool, a)
    assert cached == 0
    assert pool.register(table_a, a, num_computed=10, done=0) == 2  # two full blocks
    b = list(range(8)) + [99, 98, 97]
    table_b, cached = admit(pool, b)
    assert cached == 8 and table_b[:2] == table_a[:2]
    c = list(range(8))  # exactly two blocks: the last token must be computed, so one block only
    table_c, cached = admit(pool, c)
    assert cached == 4 and table_c[0] == table_a[0] and table_c[1] != table_a[1]
    d = [0, 1, 2, 3, 4, 5, 6, 99, 8]  # differs inside the second block
    _, cached = admit(pool, d)
    assert cached == 4
    assert pool.match([5, 1, 2, 3, 4]) == []  # same tokens at other positions are another prefix


def test_blocks_are_shared_by_reference_and_cached_after_release():
    pool = BlockPool(num_blocks=4, block_size=2)
    a = [1, 2, 3, 4, 5]
    table_a, _ = admit(pool, a)  # 3 blocks
    pool.register(table_a, a, 5, 0)
    table_b, cached = admit(pool, [1, 2, 3, 4, 9])  # shares 2 blocks, takes 1 new
    assert cached == 4 and pool.num_free == 0
    pool.free(table_a)
    assert pool.num_free == 1  # only a's private last block: the shared ones are still held by b
    pool.free(table_b)
    assert pool.num_free == 4 and pool.usage == 0.0
    assert pool.num_cached_blocks == 2
    _, cached = admit(pool, [1, 2, 3, 4, 7])  # released but still cached: matched again
    assert cached == 4


def test_allocation_evicts_least_recently_released_cached_blocks():
    pool = BlockPool(num_blocks=4, block_size=2)
    x, y = [1, 2, 3], [7, 8, 9]
    tx, _ = admit(pool, x)
    pool.register(tx, x, 3, 0)
    ty, _ = admit(pool, y)
    pool.register(ty, y, 3, 0)
    pool.free(tx)  # x's block released first: evicted first
    pool.free(ty)
    assert pool.num_cached_blocks == 2
    pool.allocate(3)  # two never-registered blocks, then the oldest cached one
    assert pool.match(x) == [] and pool.num_cached_blocks == 1
    assert len(pool.match(y)) == 1


def test_two_sequences_computing_the_same_prefix_keep_one_cached_copy():
    pool = BlockPool(num_blocks=8, block_size=2)
    p = [1, 2, 3, 4, 5]
    t1, _ = admit(pool, p)
    t2, _ = admit(pool, p)  # admitted in the same step: nothing cached yet
    pool.register(t1, p, 5, 0)
    pool.register(t2, p, 5, 0)
    assert pool.num_cached_blocks == 2
    pool.free(t2)
    assert pool.num_free == 8 - 3  # t2's private copies went back as plain free blocks
    t3, cached = admit(pool, p + [6])
    assert cached == 4 and t3[:2] == t1[:2]


def test_disabled_prefix_caching_matches_nothing():
    pool = BlockPool(num_blocks=8, block_size=2, prefix_caching=False)
    t, _ = admit(pool, [1, 2, 3, 4, 5])
    assert pool.register(t, [1, 2, 3, 4, 5], 5, 0) == 0
    assert admit(pool, [1, 2, 3, 4, 5])[1] == 0


def test_over_allocation_is_a_bug_not_a_silent_overwrite():
    pool = BlockPool(num_blocks=2, block_size=4)
    pool.allocate(2)
    with pytest.raises(RuntimeError, match="asked for 1 cache blocks, 0 free"):
        pool.allocate(1)
