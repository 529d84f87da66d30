"""The planner sizes tenacia's deepseek-v3 presets from the same shape that builds the model."""

from __future__ import annotations

import pytest

from tenacia.plan import models
from tenacia.plan.models import ModelSpec
from tenacia.shape import ModelConfig


def test_the_671b_shape_plans_like_the_published_deepseek_v3():
    ours = ModelSpec(**models.from_shape(ModelConfig(preset="deepseek-v3-671b")))
    published = ModelSpec(preset="deepseek-v3")
    for field in ("layers", "hidden", "ffn", "heads", "head_dim", "v_head_dim", "kv_dim", "vocab", "moe_layers",
                  "experts", "shared_experts", "experts_per_token", "expert_ffn", "routing_max_groups"):
        assert getattr(ours, field) == getattr(published, field), field
    assert ours.total_params_b == pytest.approx(published.total_params_b, rel=0.01)
    assert ours.activated_params_b == pytest.approx(published.activated_params_b, rel=0.03)
    assert ours.extra_activated_params_b == pytest.approx(published.extra_activated_params_b, rel=0.02)
    assert ours.kv_elements_per_token == published.kv_elements_per_token


def test_the_plan_command_line_takes_the_moe_presets(plan_from):
    plan = plan_from(flags=[("model", "moe-tiny"), ("tokens", "1e9"), ("global_batch_seqs", "64"),
                            ("fleet", "h100:8")])
    assert plan.model.is_moe and plan.model.experts == 8
