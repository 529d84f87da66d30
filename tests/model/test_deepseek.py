"""The deepseek-v3 model: multi-token prediction against a reference forward, the training
contract (loads, biases, gradients), the shape's parameter counts and its config errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tenacia import config
from tenacia.config import ConfigError
from tenacia.model import DeepSeekV3, build_model
from tenacia.shape import ModelConfig
from tenacia.shape.deepseek import num_mtp_params

from .deepseek_tiny import tiny_config, tiny_model

TOKENS = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(1))


def test_the_mtp_loss_equals_a_reference_forward():
    """Depth 1: at position i, the embedding of t_{i+1} and the main model's normed h_i predict
    t_{i+2}; the block sees the embedded tokens' positions 1..T-1; the head is shared."""
    model = tiny_model(tiny_config())
    inputs, targets = TOKENS[:, :-1], TOKENS[:, 1:]
    T = inputs.size(1)
    with torch.no_grad():
        loss, parts = model.loss(inputs, targets)
        lm = F.cross_entropy(model(inputs).flatten(0, 1), targets.reshape(-1))
        h, _ = model.hidden(inputs)
        mtp = model.mtp[0]
        x = mtp.eh_proj(torch.cat([mtp.enorm(model.tok_embeddings(targets[:, :-1])), mtp.hnorm(h[:, :-1])], dim=-1))
        positions = torch.arange(1, T)
        x, _ = mtp.block(x, model.rope_cos[positions][None, None], model.rope_sin[positions][None, None])
        mtp_logits = model.output(mtp.norm(x))
        ref_mtp = F.cross_entropy(mtp_logits.flatten(0, 1), targets[:, 1:].reshape(-1))
    torch.testing.assert_close(parts["lm"], lm, rtol=0, atol=1e-6)
    torch.testing.assert_close(parts["mtp"], ref_mtp, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, lm + 0.3 * ref_mtp, rtol=0, atol=1e-6)
    assert "balance" not in parts  # eval mode: no balance loss, no load counting


def test_a_training_step_reaches_every_parameter_and_the_bias_follows_the_loads():
    model = tiny_model(tiny_config()).train()
    loss, parts = model.loss(TOKENS[:, :-1], TOKENS[:, 1:])
    assert parts["balance"] > 0  # moe-tiny's small sequence balance loss
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    loads = model.expert_loads()  # (MoE layers: 2 main + 1 MTP, experts)
    assert loads.shape == (3, 8) and loads[:2].sum(1).tolist() == [2 * 16 * 2] * 2
    assert loads[2].sum() == 2 * 15 * 2  # the MTP module sees one position fewer
    assert torch.equal(model.last_expert_loads(), loads)
    before = model.expert_biases().clone()
    model.update_bias(loads)
    speed = model.cfg.moe.bias_update_speed  # moe-tiny's
    expected = before + speed * torch.sign(loads.float().mean(1, keepdim=True) - loads.float())
    assert torch.equal(model.expert_biases(), expected)
    assert model.expert_loads().sum() == 0  # counts restart for the next step


def test_casts_leave_the_balancing_biases_in_float32():
    model = tiny_model(tiny_config()).to(torch.bfloat16)
    assert model.expert_biases().dtype == torch.float32
    assert model.layers[1].feed_forward.router.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("tie", [True, False])
def test_the_shape_counts_the_parameters_the_model_has(tie):
    cfg = tiny_config(tie=tie)
    model = build_model(cfg)
    assert isinstance(model, DeepSeekV3)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params() + num_mtp_params(cfg)


def test_the_671b_preset_has_the_published_parameter_counts():
    cfg = ModelConfig(preset="deepseek-v3-671b")
    embedding = cfg.vocab_size * cfg.dim
    assert abs(cfg.num_params() / 671e9 - 1) < 0.01
    assert abs(cfg.num_active_params() / 37e9 - 1) < 0.03
    assert abs((cfg.num_active_params() - embedding) / 36.6e9 - 1) < 0.005  # DeepSeek's own figure
    assert abs(num_mtp_params(cfg) / 11.5e9 - 1) < 0.02  # "11.5B unique parameters" of the MTP module
    assert abs((num_mtp_params(cfg, active=True) + embedding) / 1.5e9 - 1) < 0.1  # "1.5B", head included


def test_moe_tiny_activates_as_many_parameters_as_tiny():
    moe, dense = ModelConfig(preset="moe-tiny"), ModelConfig(preset="tiny")
    assert abs(moe.num_active_params() / dense.num_params() - 1) < 0.02
    assert 5e6 < moe.num_params() < 10e6


@pytest.mark.parametrize("table, field", [
    ({"preset": "tiny", "moe": {"top_k": 2}}, "model.moe"),
    ({"preset": "tiny", "family": "deepseek-v3"}, "model.family"),
    ({"preset": "moe-tiny", "moe": {"top_k": 9}}, "model.moe.top_k"),
    ({"preset": "moe-tiny", "moe": {"n_expert_groups": 3}}, "model.moe.n_expert_groups"),
    ({"preset": "moe-tiny", "mla": {"qk_rope_head_dim": 7}}, "model.mla.qk_rope_head_dim"),
    ({"preset": "moe-tiny", "n_kv_heads": 4}, "model.n_kv_heads"),
])
def test_config_errors_name_the_field(table, field):
    with pytest.raises(ConfigError) as e:
        config.from_dict(ModelConfig, table, prefix="model")
    assert e.value.field == field


def test_a_partial_section_is_completed_from_the_preset():
    cfg = config.from_dict(ModelConfig, {"preset": "moe-tiny", "moe": {"top_k": 3}}, prefix="model")
    assert cfg.moe.top_k == 3 and cfg.moe.n_routed_experts == 8
    assert config.from_dict(ModelConfig, config.to_dict(cfg), prefix="model") == cfg
