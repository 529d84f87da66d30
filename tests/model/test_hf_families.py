"""Mistral and Qwen2 directories, as transformers saves them, load with transformers' logits and
greedy tokens; Mistral's sliding window caps the context; a qkv_bias model exports as Qwen2."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from tenacia.model.generate import generate
from tenacia.model.hf import HFFormatError, load_hf_dir, model_config_from_hf, save_hf_dir
from tenacia.model.llama import Llama
from tenacia.shape import ModelConfig

from .roundtrip import assert_export_round_trips, assert_logits_close, randomize_

VOCAB = 256
FAMILIES = {"mistral": (MistralConfig, MistralForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def random_family_model(family: str, tied: bool = False, seed: int = 0, **config) -> PreTrainedModel:
    """A tiny GQA model of ``family`` whose every tensor is random (norm gains and q/k/v biases
    too), so that a wrong or missing mapping of any of them shows in the logits."""
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(seed)
    hf_config = config_cls(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=None, eos_token_id=None,
        pad_token_id=None, rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
        **config,
    )
    model = model_cls(hf_config).eval()
    return randomize_(model)


def saved_and_loaded(hf: PreTrainedModel, path) -> Llama:
    hf.save_pretrained(path)
    assert (path / "model.safetensors").is_file()
    return load_hf_dir(path)


@pytest.mark.parametrize("family, tied", [("mistral", False), ("qwen2", False), ("qwen2", True)])
def test_logits_and_greedy_tokens_match_transformers(family, tied, tmp_path):
    hf = random_family_model(family, tied, sliding_window=None)
    ours = saved_and_loaded(hf, tmp_path / family)
    c = ours.cfg
    assert (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_dim) == (VOCAB, 64, 2, 4, 2, 160)
    assert (c.rope_theta, c.norm_eps, c.max_seq_len, c.tie_embeddings) == (5000.0, 1e-5, 256, tied)
    assert c.qkv_bias is (family == "qwen2")

    tokens = torch.randint(0, VOCAB, (2, 48), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert_logits_close(ours(tokens), hf(tokens).logits)
        prompt = tokens[0, :12].tolist()
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)
    assert generate(ours, prompt, 24) == theirs[0, len(prompt):].tolist()


def test_mistral_context_is_capped_at_its_sliding_window(tmp_path):
    hf = random_family_model("mistral", sliding_window=32)
    ours = saved_and_loaded(hf, tmp_path / "windowed")
    assert ours.cfg.max_seq_len == 32 and ours.rope_cos.shape[0] == 32
    # Within the window, windowed attention is full causal attention: the same logits.
    tokens = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        assert_logits_close(ours(tokens), hf(tokens).logits)

    config = json.loads((tmp_path / "windowed" / "config.json").read_text())
    assert model_config_from_hf({**config, "sliding_window": 4096}).max_seq_len == 256  # wider: no cap
    assert model_config_from_hf({**config, "sliding_window": None}).max_seq_len == 256
    del config["sliding_window"]  # absent: transformers' default window of 4096
    assert model_config_from_hf(config).max_seq_len == 256


def test_qwen2_sliding_window_is_ignored_unless_used(tmp_path):
    random_family_model("qwen2").save_pretrained(tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    # As Qwen2.5's published config.json: a window given, but switched off, and no layer_types.
    config = {k: v for k, v in config.items() if k != "layer_types"}
    config.update(use_sliding_window=False, sliding_window=16, max_window_layers=1)
    cfg = model_config_from_hf(config)
    assert cfg.max_seq_len == 256 and cfg.qkv_bias
    # As transformers writes it when the window is off but layer_types was given: still no window.
    sliding = {**config, "layer_types": ["full_attention", "sliding_attention"]}
    assert model_config_from_hf(sliding).max_seq_len == 256
    with pytest.raises(HFFormatError, match="use_sliding_window"):
        model_config_from_hf({**sliding, "use_sliding_window": True})
    with pytest.raises(HFFormatError, match="layer_types"):  # a Llama has no windows to switch on
        model_config_from_hf({**config, "model_type": "llama", "architectures": ["LlamaForCausalLM"],
                              "layer_types": ["full_attention", "sliding_attention"]})


def test_qkv_bias_model_exports_as_qwen2_and_round_trips(tmp_path):
    ours = Llama(ModelConfig(preset="micro", vocab_size=VOCAB, qkv_bias=True, tie_embeddings=False))
    ours.reset_parameters(seed=2)
    assert not ours.layers[0].attention.wq.bias.any()  # biases start at zero
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    ours.eval()
    out = save_hf_dir(ours, tmp_path / "export", eos_token_id=2)
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("qwen2", ["Qwen2ForCausalLM"])

    assert_export_round_trips(ours, out, Qwen2ForCausalLM, VOCAB)


def test_bias_free_model_still_exports_as_llama(tmp_path):
    out = save_hf_dir(Llama(ModelConfig(preset="micro")), tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("llama", ["LlamaForCausalLM"])
    assert config["attention_bias"] is False and "use_sliding_window" not in config
