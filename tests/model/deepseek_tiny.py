"""Tiny random deepseek-v3 models for the tests, and the routing margin they must keep.

Routing is discontinuous: an expert chosen by one implementation and not by the other (a near
tie) changes the output by far more than 1e-5. The routers' weights are scaled up so that the
sigmoid affinities spread out, and ``routing_margin`` measures, for given inputs, the smallest
gap the choice depends on; the parity tests require it to be well above float32 rounding.
"""

from __future__ import annotations

import torch

from tenacia import config
from tenacia.model.deepseek import DeepSeekV3
from tenacia.model.deepseek.moe import MoE
from tenacia.shape import ModelConfig


def tiny_config(q_lora_rank: int = 32, tie: bool = False, mtp_depth: int = 1) -> ModelConfig:
    """3 layers (1 dense), 4 heads, 8 routed experts in 4 groups, 2 from 2 groups a token."""
    return config.from_dict(ModelConfig, dict(
        preset="moe-tiny", vocab_size=256, dim=64, n_layers=3, n_heads=4, n_kv_heads=4, ffn_dim=96,
        max_seq_len=64, tie_embeddings=tie, mtp_depth=mtp_depth,
        mla=dict(q_lora_rank=q_lora_rank, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12),
        moe=dict(n_dense_layers=1, n_routed_experts=8, n_shared_experts=1, top_k=2, n_expert_groups=4,
                 n_limited_groups=2, expert_ffn_dim=32, route_scale=2.5)), prefix="model")


def tiny_model(cfg: ModelConfig, seed: int = 0) -> DeepSeekV3:
    """Random weights, routers scaled x20 (spread affinities), random balancing biases; eval mode."""
    model = DeepSeekV3(cfg)
    model.reset_parameters(seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for moe in model.moe_layers():
            moe.router.weight.mul_(20)
            moe.router.expert_bias.copy_((torch.rand(moe.router.expert_bias.shape, generator=gen) - 0.5) / 10)
    return model.eval()


def routing_margin(model: DeepSeekV3, tokens: torch.Tensor) -> float:
    """The smallest gap, over every MoE layer and token of a forward on ``tokens``, between the
    last chosen and the first rejected score: of the groups, then of the experts kept."""
    inputs: list[tuple[MoE, torch.Tensor]] = []
    hooks = [moe.router.register_forward_hook(lambda mod, args, out, moe=moe: inputs.append((moe, args[0])))
             for moe in model.moe_layers()]
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    margin = float("inf")
    for moe, x in inputs:
        c = moe.cfg
        choice = torch.sigmoid(x.float() @ moe.router.weight.float().T) + moe.router.expert_bias  # (N, E)
        groups = choice.view(len(choice), c.n_expert_groups, -1).topk(2, dim=-1).values.sum(-1)
        g = groups.sort(dim=-1, descending=True).values
        if c.n_limited_groups < c.n_expert_groups:
            margin = min(margin, (g[:, c.n_limited_groups - 1] - g[:, c.n_limited_groups]).min().item())
        kept = groups.topk(c.n_limited_groups, dim=-1).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, kept, True).repeat_interleave(c.experts_per_group, 1)
        e = choice.masked_fill(~mask, float("-inf")).sort(dim=-1, descending=True).values
        margin = min(margin, (e[:, c.top_k - 1] - e[:, c.top_k]).min().item())
    return margin
