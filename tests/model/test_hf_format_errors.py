"""Configs and checkpoints tenacia cannot load faithfully are refused with errors that name what
is wrong and what is allowed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tenacia.model.hf import (
    HFFormatError,
    hf_config_from_model,
    hf_key,
    load_hf_dir,
    model_config_from_hf,
    save_hf_dir,
    tenacia_key,
)
from tenacia.model.llama import Llama
from tenacia.shape import ModelConfig

LLAMA = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 512,
    "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 512, "rope_theta": 500000.0, "tie_word_embeddings": False,
}


def with_(**changes):
    return {**LLAMA, **changes}


@pytest.mark.parametrize("config, field, allowed", [
    (with_(model_type="gpt2"), "model_type", "one of 'llama', 'mistral', 'qwen2'"),
    (with_(model_type="gemma"), "model_type", "one of 'llama', 'mistral', 'qwen2'"),
    (with_(architectures=["LlamaForSequenceClassification"]), "architectures", "LlamaForCausalLM"),
    (with_(model_type="qwen2"), "architectures", "['Qwen2ForCausalLM'] for model_type 'qwen2'"),
    (with_(model_type="qwen2", architectures=["Qwen2ForCausalLM"], use_sliding_window=True),
     "use_sliding_window", "false (tenacia has no sliding-window attention"),
    (with_(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=0),
     "sliding_window", "null, or a positive integer"),
    (with_(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window="4096"),
     "sliding_window", "null, or a positive integer"),
    (with_(layer_types=["full_attention", "sliding_attention"]), "layer_types",
     "'full_attention' for every layer"),
    (with_(attention_bias=True), "attention_bias", "no biases"),
    (with_(mlp_bias=True), "mlp_bias", "no biases"),
    (with_(hidden_act="gelu"), "hidden_act", "'silu'"),
    (with_(head_dim=32), "head_dim", "hidden_size / num_attention_heads = 16"),
    (with_(rope_scaling={"rope_type": "llama3", "factor": 8.0}), "rope_scaling.rope_type",
     "only 'default'"),
    (with_(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling.rope_type", "only 'default'"),
    (with_(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}),
     "rope_parameters.rope_type", "only 'default'"),
])
def test_unsupported_configs_are_refused(config, field, allowed):
    with pytest.raises(HFFormatError) as e:
        model_config_from_hf(config)
    assert f"'{field}'" in str(e.value) and allowed in str(e.value)


def test_both_rope_layouts_are_read():
    legacy = model_config_from_hf(with_(rope_scaling=None))
    current = model_config_from_hf(with_(rope_theta=None, rope_parameters={
        "rope_type": "default", "rope_theta": 500000.0}))
    assert legacy.rope_theta == current.rope_theta == 500000.0
    assert legacy == current
    assert model_config_from_hf(hf_config_from_model(legacy)) == legacy


def test_llama_defaults_fill_optional_fields():
    minimal = {k: LLAMA[k] for k in ("model_type", "vocab_size", "hidden_size",
                                     "intermediate_size", "num_hidden_layers", "num_attention_heads")}
    cfg = model_config_from_hf(minimal)
    assert (cfg.n_kv_heads, cfg.norm_eps, cfg.rope_theta, cfg.max_seq_len, cfg.tie_embeddings) == (
        4, 1e-6, 10000.0, 2048, False)


@pytest.mark.parametrize("qkv_bias", [False, True], ids=["llama", "qwen2"])
def test_key_mapping_is_a_bijection(qkv_bias):
    model = Llama(ModelConfig(preset="micro", tie_embeddings=False, qkv_bias=qkv_bias))
    names = list(model.state_dict())
    assert any(n.endswith(".bias") for n in names) is qkv_bias
    assert [tenacia_key(hf_key(n)) for n in names] == names
    assert hf_key("layers.1.feed_forward.w1.weight") == "model.layers.1.mlp.gate_proj.weight"
    with pytest.raises(HFFormatError, match="has no Hugging Face Llama counterpart"):
        hf_key("layers.0.attention.rotary.weight")


@pytest.fixture
def export(tmp_path):
    """An untied micro model saved as a HF directory; returns (dir, its tensors)."""
    out = save_hf_dir(Llama(ModelConfig(preset="micro", tie_embeddings=False)), tmp_path / "m")
    return out, load_file(out / "model.safetensors")


def rewrite(out, tensors):
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})


def test_missing_weight_is_named(export):
    out, tensors = export
    del tensors["model.layers.1.mlp.up_proj.weight"]
    rewrite(out, tensors)
    with pytest.raises(HFFormatError, match=r"missing weight\(s\) model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf_dir(out)


def test_untied_model_needs_its_lm_head(export):
    out, tensors = export
    del tensors["lm_head.weight"]
    rewrite(out, tensors)
    with pytest.raises(HFFormatError, match="missing weight.*lm_head.weight"):
        load_hf_dir(out)


def test_bias_weight_is_refused(export):
    out, tensors = export
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    rewrite(out, tensors)
    with pytest.raises(HFFormatError, match=r"unexpected weight 'model.layers.0.self_attn.q_proj.bias': "
                       r"the config has no q/k/v biases \(only model_type 'qwen2' has them\)"):
        load_hf_dir(out)
    del tensors["model.layers.0.self_attn.q_proj.bias"]
    tensors["model.layers.0.self_attn.o_proj.bias"] = torch.zeros(64)  # no model type has this one
    rewrite(out, tensors)
    with pytest.raises(HFFormatError, match="'model.layers.0.self_attn.o_proj.bias' is not part of"):
        load_hf_dir(out)


def test_extra_layer_is_refused(export):
    out, tensors = export
    tensors["model.layers.2.input_layernorm.weight"] = torch.ones(64)
    rewrite(out, tensors)
    with pytest.raises(HFFormatError, match="unexpected weight 'model.layers.2.input_layernorm.weight'"):
        load_hf_dir(out)


def test_shape_disagreeing_with_config_is_named(export):
    out, _ = export
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    with pytest.raises(HFFormatError) as e:
        load_hf_dir(out)
    assert str(e.value) == ("weight 'model.layers.0.mlp.gate_proj.weight' has shape (192, 64), "
                            "but config.json implies (128, 64)")


def test_pickle_checkpoints_are_never_loaded(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(HFFormatError, match="pytorch_model.bin found: pickle checkpoints are not loaded"):
        load_hf_dir(tmp_path)
    with pytest.raises(HFFormatError, match="no config.json"):
        load_hf_dir(tmp_path / "nowhere")


def test_missing_shard_is_named(export):
    out, _ = export
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(HFFormatError, match="names shard 'model-00002-of-00002.safetensors', which is missing"):
        load_hf_dir(out)
