"""deepseek-v3 <-> transformers' DeepseekV3ForCausalLM: equal logits both ways (float32, one
thread), with and without the low-rank query path; the published names, MTP layer included, which
transformers' own MTP drafter reads with equal logits."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open

from tenacia.model.deepseek.hf import from_hf_state_dict
from tenacia.model.hf import load_hf_dir, save_hf_dir
from tenacia.shape.hf import HFFormatError, model_config_from_hf

from .deepseek_tiny import routing_margin, tiny_config, tiny_model

IDS = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=[(0, True), (32, False)], ids=["plain-q-tied", "low-rank-q"])
def exported(request, tmp_path_factory):
    q_lora_rank, tie = request.param
    model = tiny_model(tiny_config(q_lora_rank, tie))
    out = save_hf_dir(model, tmp_path_factory.mktemp("deepseek") / "hf")
    return model, out


def test_transformers_loads_the_export_with_equal_logits(exported):
    from transformers import AutoModelForCausalLM

    ours, path = exported
    # No near-tie: both sides choose the same experts (affinities differ by ~1e-7 at most).
    assert routing_margin(ours, IDS) > 1e-5
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert type(hf).__name__ == "DeepseekV3ForCausalLM"
    with torch.inference_mode():
        assert (hf(IDS).logits - ours(IDS)).abs().max().item() < 1e-5


def test_the_export_uses_the_published_names_with_mtp_as_the_extra_layer(exported):
    ours, path = exported
    cfg = ours.cfg
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "deepseek_v3" and config["rope_interleave"] is True
    assert config["num_nextn_predict_layers"] == 1 and config["q_lora_rank"] == (cfg.mla.q_lora_rank or None)
    with safe_open(path / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
    mtp = {n.removeprefix("model.layers.3.") for n in names if n.startswith("model.layers.3.")}
    q = {"self_attn.q_proj.weight"} if not cfg.mla.q_lora_rank else {
        "self_attn.q_a_proj.weight", "self_attn.q_a_layernorm.weight", "self_attn.q_b_proj.weight"}
    assert mtp == q | {
        "enorm.weight", "hnorm.weight", "eh_proj.weight", "embed_tokens.weight", "shared_head.norm.weight",
        "shared_head.head.weight", "input_layernorm.weight", "post_attention_layernorm.weight",
        "self_attn.kv_a_proj_with_mqa.weight", "self_attn.kv_a_layernorm.weight", "self_attn.kv_b_proj.weight",
        "self_attn.o_proj.weight", "mlp.gate.weight", "mlp.gate.e_score_correction_bias",
        *(f"mlp.shared_experts.{p}_proj.weight" for p in ("gate", "up", "down")),
        *(f"mlp.experts.{e}.{p}_proj.weight" for e in range(8) for p in ("gate", "up", "down"))}
    assert ("lm_head.weight" in names) == (not cfg.tie_embeddings)
    assert "model.layers.0.mlp.gate_proj.weight" in names  # the dense first layer


def test_the_export_loads_back_bit_for_bit_mtp_and_biases_included(exported):
    ours, path = exported
    back = load_hf_dir(path)
    assert dataclasses.replace(back.cfg, preset=ours.cfg.preset) == ours.cfg
    want, got = ours.state_dict(), back.state_dict()
    assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize("q_lora_rank", [None, 24], ids=["plain-q", "low-rank-q"])
def test_a_directory_saved_by_transformers_loads_with_equal_logits(q_lora_rank, tmp_path):
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(3)
    config = DeepseekV3Config(
        vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
        kv_lora_rank=16, q_lora_rank=q_lora_rank, qk_rope_head_dim=8, v_head_dim=12, qk_nope_head_dim=8,
        n_group=4, topk_group=2, num_experts_per_tok=2, first_k_dense_replace=1, max_position_embeddings=64)
    hf = DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in hf.model.layers[1:]:
            layer.mlp.gate.weight.normal_(0, 0.5)
            layer.mlp.gate.e_score_correction_bias.uniform_(-0.05, 0.05)
    hf.save_pretrained(tmp_path)
    ours = load_hf_dir(tmp_path)
    assert ours.cfg.mtp_depth == 0  # transformers saves no MTP layer
    assert routing_margin(ours, IDS) > 1e-5
    with torch.inference_mode():
        assert (hf(IDS).logits - ours(IDS)).abs().max().item() < 1e-5
    fused, _ = from_hf_state_dict(hf.state_dict(), ours.cfg)  # transformers' in-memory layout
    assert all(torch.equal(fused[k], v) for k, v in ours.state_dict().items())


@pytest.mark.parametrize("field, value", [
    ("rope_scaling", {"type": "yarn", "factor": 40}),
    ("quantization_config", {"quant_method": "fp8"}),
    ("topk_method", "greedy"),
    ("norm_topk_prob", False),
])
def test_a_config_the_model_cannot_reproduce_is_refused_naming_the_field(field, value):
    config = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], field: value}
    with pytest.raises(HFFormatError, match=field):
        model_config_from_hf(config)


def test_the_published_config_maps_to_the_671b_preset_shape():
    from tenacia.shape import ModelConfig

    published = ModelConfig(preset="deepseek-v3-671b")
    cfg = model_config_from_hf({"model_type": "deepseek_v3", "max_position_embeddings": 4096})
    assert (cfg.mla, cfg.moe.n_routed_experts, cfg.num_params()) == (
        published.mla, published.moe.n_routed_experts, published.num_params())


def test_transformers_mtp_module_reads_the_extra_layer_with_equal_logits(exported, monkeypatch):
    """transformers' own MTP drafter (``MtpModel``) loads the exported layer by its documented
    names and predicts the token after next as tenacia's MTP module does. It looks for the MTP
    layer at index 61 (DeepSeek-V3's); the tiny model's is 3."""
    from transformers import AutoModelForCausalLM, DeepseekV3ForCausalLM
    from transformers.modeling_layers import MtpModel

    ours, path = exported
    n = ours.cfg.n_layers
    monkeypatch.setattr(DeepseekV3ForCausalLM, "_keys_to_ignore_on_load_unexpected", [rf"model\.layers\.{n}.*"])
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    drafter = MtpModel.from_pretrained(hf).eval()
    inputs, targets = IDS[:, :-1], IDS[:, 1:]
    T = inputs.size(1)
    with torch.inference_mode():
        h, _ = ours.hidden(inputs)
        want = ours.mtp_logits(h, targets)[0][0]
        last = hf(inputs, output_hidden_states=True).hidden_states[-1]  # after the final norm
        positions = torch.arange(1, T).expand(len(inputs), -1)  # the embedded tokens' positions
        got = drafter._project_to_logits(drafter.forward_layer(0, last[:, :-1], positions, None,
                                                                input_ids=targets[:, :-1]))
    assert (got - want).abs().max().item() < 1e-5
