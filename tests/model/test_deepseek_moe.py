"""DeepSeekMoE routing and balancing on hand-made examples, and the grouped experts against a
token-by-token reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tenacia.model.deepseek.moe import MoE, route, sequence_balance_loss, update_bias
from tenacia.shape.deepseek import MoEConfig


def moe_config(**kw) -> MoEConfig:
    base = dict(n_dense_layers=0, n_routed_experts=8, n_shared_experts=1, top_k=2, n_expert_groups=4,
                n_limited_groups=2, expert_ffn_dim=16, route_scale=2.5, bias_update_speed=0.01,
                balance_loss_weight=0.0)
    return MoEConfig(**{**base, **kw})


# Affinities of one token: 4 groups of 2 experts. Expert 0 is the best single expert, but its
# group (0.9 + 0.1) ranks third behind group 1 (0.6 + 0.58) and group 2 (0.55 + 0.5).
SCORES = torch.tensor([[0.9, 0.1, 0.6, 0.58, 0.55, 0.5, 0.2, 0.2]])


def test_group_limited_routing_keeps_the_best_groups_then_the_best_experts():
    weights, indices = route(SCORES, torch.zeros(8), moe_config())
    assert indices.tolist() == [[2, 3]]  # expert 0 is out: its group is not among the best two
    torch.testing.assert_close(weights, torch.tensor([[0.6, 0.58]]) / 1.18 * 2.5)
    _, unlimited = route(SCORES, torch.zeros(8), moe_config(n_limited_groups=4))
    assert unlimited.tolist() == [[0, 2]]


def test_the_bias_changes_which_experts_are_chosen_but_not_how_they_are_weighed():
    bias = torch.zeros(8)
    bias[1] = 0.3  # group 0 now scores 0.9 + 0.4 = 1.3, the best
    weights, indices = route(SCORES, bias, moe_config())
    assert indices.tolist() == [[0, 2]]
    torch.testing.assert_close(weights, torch.tensor([[0.9, 0.6]]) / 1.5 * 2.5)  # unbiased affinities
    small = torch.full((8,), 0.01)  # moves every choice alike: same experts, same weights
    assert torch.equal(route(SCORES, small, moe_config())[0], route(SCORES, torch.zeros(8), moe_config())[0])


def test_ties_go_to_the_lower_index():
    weights, indices = route(torch.full((3, 8), 0.5), torch.zeros(8), moe_config())
    assert indices.tolist() == [[0, 1]] * 3
    torch.testing.assert_close(weights, torch.full((3, 2), 1.25))


def test_update_bias_moves_each_expert_by_gamma_against_its_load_error():
    bias = torch.zeros(4)
    update_bias(bias, torch.tensor([10, 0, 5, 5]), 0.01)  # mean 5: over, under, exact, exact
    torch.testing.assert_close(bias, torch.tensor([-0.01, 0.01, 0.0, 0.0]))


def test_sequence_balance_loss_is_one_when_balanced_and_grows_when_not():
    E, T, k = 4, 8, 2
    scores = torch.full((T, E), 0.5)
    balanced = torch.tensor([[0, 1], [2, 3]] * (T // 2))
    assert abs(sequence_balance_loss(scores, balanced, 1, k).item() - 1.0) < 1e-6
    skewed_scores = torch.tensor([[0.9, 0.9, 0.1, 0.1]]).expand(T, E)
    skewed = torch.tensor([[0, 1]] * T)  # f = (2, 2, 0, 0), P = (0.45, 0.45, 0.05, 0.05)
    assert abs(sequence_balance_loss(skewed_scores, skewed, 1, k).item() - 1.8) < 1e-6


def test_grouped_experts_equal_a_token_by_token_reference_and_report_loads():
    torch.manual_seed(0)
    cfg = moe_config()
    moe = MoE(32, cfg)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 5, 32)
    out, aux = moe(x)
    weights, indices = route(torch.sigmoid(x.view(-1, 32) @ moe.router.weight.T), moe.router.expert_bias, cfg)
    ref = torch.zeros(10, 32)
    for t, token in enumerate(x.view(-1, 32)):
        for w, e in zip(weights[t], indices[t], strict=True):
            ex = moe.experts
            ref[t] += w * ((F.silu(token @ ex.w1[e].T) * (token @ ex.w3[e].T)) @ ex.w2[e].T)
    ref += moe.shared(x.view(-1, 32))
    torch.testing.assert_close(out.view(-1, 32), ref, rtol=1e-5, atol=1e-5)
    assert aux is None  # balance loss weight 0
    assert torch.equal(moe.last_loads, torch.bincount(indices.reshape(-1), minlength=8))
    assert int(moe.step_loads.sum()) == 20  # training mode: 10 tokens x 2 experts counted
    moe.eval()
    moe(x)
    assert int(moe.step_loads.sum()) == 20  # inference does not count towards balancing
