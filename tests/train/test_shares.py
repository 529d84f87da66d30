"""Shares of the global batch, and salvage: a re-run of a discarded step reuses what survivors hold."""

import torch

from tenacia.device import detect
from tenacia.model.llama import Llama, ModelConfig
from tenacia.train.shares import LocalGradients, even_shares, salvage_shares
from tenacia.train.step import compute_gradients


def test_even_shares_partition_the_batch():
    assert even_shares([0, 2, 5], 8) == {"0": [0, 1, 2], "2": [3, 4, 5], "5": [6, 7]}


def test_salvage_keeps_survivors_shares_and_spreads_the_lost_one_over_the_least_loaded():
    before = even_shares([0, 1, 2, 3], 16)
    after = salvage_shares(before, [0, 2, 3], 16)
    assert after == {"0": [0, 1, 2, 3, 4, 7], "2": [5, 8, 9, 10, 11], "3": [6, 12, 13, 14, 15]}
    # a second loss during the re-run, and a healed newcomer (4) that holds nothing yet
    again = salvage_shares(after, [0, 3, 4], 16)
    assert again["0"] == after["0"] and set(after["3"]) <= set(again["3"])
    assert sorted(p for s in again.values() for p in s) == list(range(16))
    assert max(map(len, again.values())) - min(map(len, again.values())) <= 1


def test_reused_gradients_equal_a_fresh_computation():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    dev = detect("cpu")
    model = Llama(ModelConfig(preset="micro"))
    data = torch.randint(0, 512, (8, 17))
    batch = list(range(8))
    compute_gradients(model, data[[1, 2, 5, 6]], 2, 8, dev)
    fresh = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
    model.zero_grad(set_to_none=True)

    grads = LocalGradients(model)
    _, tokens, reused = grads.compute(7, [1, 2], batch, lambda ids: data[ids], 2, dev)
    assert (tokens, reused) == (32, 0)
    loss, tokens, reused = grads.compute(7, [1, 2, 5, 6], batch, lambda ids: data[ids], 2, dev)
    assert (tokens, reused) == (64, 2)
    assert torch.allclose(torch.cat([p.grad.reshape(-1) for p in model.parameters()]), fresh, atol=1e-6)
    # another step, or positions that do not cover what is held: computed from scratch
    assert grads.compute(8, [1, 2], batch, lambda ids: data[ids], 2, dev)[2] == 0
    assert grads.compute(8, [3], batch, lambda ids: data[ids], 2, dev)[2] == 0
