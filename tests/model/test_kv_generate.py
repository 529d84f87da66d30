"""KV-cached generation equals recomputing the whole sequence without a cache."""

from __future__ import annotations

import pytest
import torch

from tenacia.model.generate import StaticKVCache, decode_one_token, generate, prefill, sample
from tenacia.model.llama import Llama
from tenacia.shape import ModelConfig

NEW_TOKENS = 32


@pytest.fixture(scope="module")
def model() -> Llama:
    """The micro preset (GQA: 4 query heads, 2 kv heads) with sharper-than-init weights, so that
    greedy choices are not near-ties."""
    m = Llama(ModelConfig(preset="micro", max_seq_len=128))
    m.reset_parameters(seed=0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(6.0)
    return m.eval()


def prompt(n: int, seed: int) -> list[int]:
    return torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def greedy_without_cache(model: Llama, ids: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
    """Reference: a full forward pass over the whole sequence for every new token."""
    seq, out, steps = list(ids), [], []
    with torch.inference_mode():
        for _ in range(n):
            logits = model(torch.tensor([seq]))[0, -1]
            steps.append(logits)
            out.append(int(logits.argmax()))
            seq.append(out[-1])
    return out, steps


def test_greedy_with_cache_equals_recomputation(model):
    ids = prompt(10, seed=1)
    want, _ = greedy_without_cache(model, ids, NEW_TOKENS)
    assert generate(model, ids, NEW_TOKENS) == want


def test_cached_logits_equal_full_forward_logits(model):
    ids = prompt(9, seed=2)
    tokens, reference = greedy_without_cache(model, ids, 12)
    cache = StaticKVCache(model.cfg, batch_size=1, max_len=32)
    with torch.inference_mode():
        logits = prefill(model, cache, torch.tensor([ids]))
        for step, token in enumerate(tokens):
            torch.testing.assert_close(logits[0], reference[step], rtol=0, atol=1e-5)
            logits = decode_one_token(model, cache, torch.tensor([[token]]))
    assert cache.length == len(ids) + len(tokens)


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_chunked_prefill_equals_one_pass(model, chunk):
    ids = torch.tensor([prompt(19, seed=3)])
    with torch.inference_mode():
        whole = model(ids)[:, -1]
        cache = StaticKVCache(model.cfg, batch_size=1, max_len=24)
        chunked = prefill(model, cache, ids, chunk_size=chunk)
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
        # The cache then holds the same keys and values as a one-pass prefill.
        one_pass = StaticKVCache(model.cfg, batch_size=1, max_len=24)
        prefill(model, one_pass, ids)
    for layer in range(model.cfg.n_layers):
        torch.testing.assert_close(cache.k[layer][:, :, :19], one_pass.k[layer][:, :, :19], rtol=0, atol=1e-5)
        torch.testing.assert_close(cache.v[layer][:, :, :19], one_pass.v[layer][:, :, :19], rtol=0, atol=1e-5)


def test_batched_sequences_do_not_interact(model):
    a, b = prompt(8, seed=4), prompt(8, seed=5)
    cache = StaticKVCache(model.cfg, batch_size=2, max_len=8 + 10)
    rows = []
    with torch.inference_mode():
        logits = prefill(model, cache, torch.tensor([a, b]))
        for _ in range(10):
            token = sample(logits)  # (2,)
            rows.append(token)
            logits = decode_one_token(model, cache, token[:, None])
    batched = torch.stack(rows, dim=1).tolist()
    assert batched == [generate(model, a, 10), generate(model, b, 10)]


def test_sampling_is_seeded_and_respects_top_k(model):
    ids = prompt(6, seed=6)
    draw = lambda seed, **kw: generate(model, ids, 24, temperature=1.0,  # noqa: E731
                                       generator=torch.Generator().manual_seed(seed), **kw)
    assert draw(7) == draw(7)
    assert draw(7) != draw(8)
    assert draw(7, top_k=1) == generate(model, ids, 24)
    tokens = draw(9, top_k=3)
    with torch.inference_mode():
        logits = model(torch.tensor([ids + tokens]))[0, len(ids) - 1:-1]  # (24, V) per step
    allowed = logits.topk(3, dim=-1).indices
    assert all(t in allowed[i].tolist() for i, t in enumerate(tokens))


def test_stops_after_first_stop_token(model):
    ids = prompt(10, seed=1)
    full = generate(model, ids, NEW_TOKENS)
    stop = full[5]
    got = generate(model, ids, NEW_TOKENS, stop_ids={stop, -1})
    assert got == full[: full.index(stop) + 1]
    assert generate(model, ids, 0) == []


def test_bad_arguments_are_rejected(model):
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        generate(model, [], 4)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len=128"):
        generate(model, prompt(100, seed=1), 29)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [1, 2], 4, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, [1, 2], 4, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match="max_len=129"):
        StaticKVCache(model.cfg, batch_size=1, max_len=129)
    cache = StaticKVCache(model.cfg, batch_size=1, max_len=4)
    with pytest.raises(ValueError, match="KV cache full"), torch.inference_mode():
        prefill(model, cache, torch.tensor([[1, 2, 3, 4, 5]]))
