"""A prefill's kernels, every build this CPU runs (``prefill_attention.c``, the key/value store):
the tiled causal attention equal to SDPA's for every length across its blocks, for a whole prompt
and for a chunk after cached tokens, q, k and v as views of the fused q/k/v product; the store of
a prefill's keys equal to index_copy_ and refusing a slot outside the store. A build the CPU lacks
the instruction set for is skipped with the reason (the ``kernels`` fixture, tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .test_cpu_kernels import kernels  # noqa: F401 (the fixture of every build)


def _prefill_inputs(n: int, heads: int, kv_heads: int, hd: int, seed: int):
    """q (H, n, hd), k and v (KVH, n, hd): views of one fused q/k/v product, as the engine passes them."""
    fused = torch.randn(n, (heads + 2 * kv_heads) * hd, generator=torch.Generator().manual_seed(seed))
    q = fused[:, :heads * hd].view(n, heads, hd).transpose(0, 1)
    k = fused[:, heads * hd:(heads + kv_heads) * hd].view(n, kv_heads, hd).transpose(0, 1)
    v = fused[:, (heads + kv_heads) * hd:].view(n, kv_heads, hd).transpose(0, 1)
    return q, k, v


def _prefill(kernels, q, k, v, threads: int, start: int = 0):  # noqa: F811
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = torch.empty(q.size(1), q.size(0), q.size(2))
        kernels.prefill_attention(q, k, v, out, start)
    finally:
        torch.set_num_threads(before)
    return out.transpose(0, 1)  # (H, n, hd)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("heads, kv_heads, hd, lengths", [
    (9, 3, 64, range(1, 301)),  # SmolLM2: every length to 300
    (10, 2, 48, (1, 2, 15, 16, 17, 24, 25, 63, 64, 65, 100, 129, 300)),  # 5 heads a group, 3 x 16 floats
    (4, 1, 40, (1, 5, 47, 48, 49, 100, 300)),  # 40 floats: no multiple of 16, token by token in avx512
    (4, 4, 16, (1, 16, 48, 49, 100)),
    (32, 2, 128, (1, 3, 4, 100)),  # 16 heads a group, the most the kernel takes
])
def test_prefill_attention_equals_causal_sdpa(kernels, heads, kv_heads, hd, lengths, threads):  # noqa: F811
    """A prefill's attention of one new sequence, q a view of the fused q/k/v product: token i
    attends to keys 0 .. i, as SDPA with is_causal. The lengths cross the kernel's blocks of
    queries (48 rows: 16 tokens of 3 heads, ...) and of keys (64; panels of 16); each length is a
    prefix of one sequence, checked against that sequence's causal SDPA."""
    longest = max(lengths)
    q, k, v = _prefill_inputs(longest, heads, kv_heads, hd, seed=hd)
    want = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True, enable_gqa=True)[0]
    for n in lengths:  # allclose: assert_close takes ~40 ms a call here, 300 calls a case
        got = _prefill(kernels, q[:, :n], k[:, :n], v[:, :n], threads)
        assert torch.allclose(got, want[:, :n], rtol=1e-5, atol=1e-6), (
            f"{n} tokens: largest difference {float((got - want[:, :n]).abs().max()):.3g}")


@pytest.mark.parametrize("threads", [1, 2])
def test_prefill_attention_of_a_2048_token_chunk_equals_causal_sdpa(kernels, threads):  # noqa: F811
    """The engine's longest prefill chunk, SmolLM2's heads: 32 blocks of keys; k and v here
    (KVH, n, hd) tensors of their own, not views."""
    q, k, v = _prefill_inputs(2048, 9, 3, 64, seed=2048)
    k, v = k.contiguous(), v.contiguous()
    want = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True, enable_gqa=True)[0]
    torch.testing.assert_close(_prefill(kernels, q, k, v, threads), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("heads, kv_heads, hd", [(9, 3, 64), (10, 2, 48), (4, 1, 40)])
def test_prefill_attention_after_cached_tokens_equals_the_whole_sequences_rows(kernels, heads, kv_heads, hd, threads):  # noqa: F811
    """A chunk of n new tokens after ``start`` cached ones (a long prompt's later chunk, or a
    cached prefix): new token i attends to keys 0 .. start + i, so its rows are the whole
    sequence's causal attention's rows start .. start + n - 1. Starts and lengths cross the
    kernel's blocks of 16 tokens and 64 keys; head size 40 runs token by token in avx512."""
    q, k, v = _prefill_inputs(300, heads, kv_heads, hd, seed=hd + 1)
    want = F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True, enable_gqa=True)[0]
    for start, n in ((1, 1), (1, 16), (15, 17), (16, 48), (63, 2), (64, 64), (100, 100), (200, 100), (299, 1)):
        got = _prefill(kernels, q[:, start:start + n], k[:, :start + n], v[:, :start + n], threads, start)
        assert torch.allclose(got, want[:, start:start + n], rtol=1e-5, atol=1e-6), (
            f"{n} tokens after {start}: largest difference {float((got - want[:, start:start + n]).abs().max()):.3g}")


def test_store_rows_writes_a_prefills_keys_to_their_slots_as_index_copy(kernels):  # noqa: F811
    """Views of the fused q/k/v product take the kernel; another layout (heads apart) index_copy_."""
    gen = torch.Generator().manual_seed(5)
    fused = torch.randn(37, 15 * 64, generator=gen)
    slots = torch.randperm(100, generator=gen)[:37]
    for rows in (fused[:, 576:768].view(37, 3, 64), fused[:, :576].view(37, 3, 192)[:, :, :64]):
        store, want = torch.zeros(100, 3, 64), torch.zeros(100, 3, 64)
        kernels.store_rows(store, slots, rows)
        want.index_copy_(0, slots, rows)
        assert torch.equal(store, want)


@pytest.mark.parametrize("bad", [-1, 100, 1 << 40])
def test_store_rows_refuses_a_slot_outside_the_store_and_writes_nothing(kernels, bad):  # noqa: F811
    """The C copy has no bounds of its own: a slot below 0 or past the store's end is an
    IndexError naming the range and the token, and the store is left as it was; a layout that
    goes to index_copy_ gets torch's IndexError."""
    rows = torch.randn(4, 3, 64)
    store = torch.zeros(100, 3, 64)
    slots = torch.tensor([0, 7, bad, 9])
    with pytest.raises(IndexError, match=rf"slots must be in \[0, 100\), got {bad} for token 2"):
        kernels.store_rows(store, slots, rows)
    assert not store.any()
    with pytest.raises(IndexError):
        kernels.store_rows(store, slots, torch.randn(4, 3, 128)[:, :, :64])
