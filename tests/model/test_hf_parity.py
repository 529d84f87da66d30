"""Parity with transformers' LlamaForCausalLM on a random tiny config, tied and untied: logits,
greedy decoding, and the round trip tenacia -> save_hf_dir -> transformers / load_hf_dir."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from tenacia.model.generate import generate
from tenacia.model.hf import load_hf_dir, save_hf_dir
from tenacia.model.llama import Llama
from tenacia.shape import ModelConfig

from .roundtrip import assert_export_round_trips, assert_logits_close, randomize_

GREEDY_TOKENS = 32


def random_hf_model(tied: bool, seed: int = 0) -> LlamaForCausalLM:
    """A tiny GQA Llama whose every weight is random, norms included, so that a wrong mapping
    between any two tensors shows in the logits."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rope_theta=5000.0, rms_norm_eps=1e-5, tie_word_embeddings=tied,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    return randomize_(model)


def random_tenacia_model(tied: bool, seed: int = 1) -> Llama:
    model = Llama(ModelConfig(preset="micro", tie_embeddings=tied, rope_theta=5000.0))
    model.reset_parameters(seed=seed)
    with torch.no_grad():  # random norm gains too, for the same reason as above
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.2)
    return model.eval()


@pytest.fixture(params=[True, False], ids=["tied", "untied"])
def hf_pair(request, tmp_path):
    """(transformers model, tenacia model loaded from its save_pretrained directory)."""
    hf = random_hf_model(tied=request.param)
    hf.save_pretrained(tmp_path / "hf")
    return hf, load_hf_dir(tmp_path / "hf")


def test_config_maps_onto_model_config(hf_pair):
    hf, ours = hf_pair
    c = ours.cfg
    assert (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.ffn_dim) == (512, 64, 2, 4, 2, 160)
    assert (c.rope_theta, c.norm_eps, c.max_seq_len) == (5000.0, 1e-5, 256)
    assert c.tie_embeddings == hf.config.tie_word_embeddings
    if c.tie_embeddings:
        assert ours.output.weight is ours.tok_embeddings.weight


def test_logits_match_transformers(hf_pair):
    hf, ours = hf_pair
    tokens = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert_logits_close(ours(tokens), hf(tokens).logits)


def test_greedy_tokens_match_transformers_generate(hf_pair):
    hf, ours = hf_pair
    prompt = torch.randint(0, 512, (12,), generator=torch.Generator().manual_seed(4)).tolist()
    with torch.inference_mode():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=GREEDY_TOKENS, do_sample=False)
    theirs = theirs[0, len(prompt):].tolist()
    assert len(theirs) == GREEDY_TOKENS
    assert generate(ours, prompt, GREEDY_TOKENS) == theirs


def test_sharded_checkpoint_loads_the_same(hf_pair, tmp_path):
    hf, ours = hf_pair
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    sharded = load_hf_dir(tmp_path / "sharded")
    for name, tensor in ours.state_dict().items():
        assert torch.equal(sharded.state_dict()[name], tensor), name


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_round_trip_through_save_hf_dir(tied, tmp_path):
    ours = random_tenacia_model(tied)
    out = save_hf_dir(ours, tmp_path / "export", bos_token_id=1, eos_token_id=2, pad_token_id=0)

    with safe_open(out / "model.safetensors", framework="pt") as f:
        stored = set(f.keys())
    assert ("lm_head.weight" in stored) is not tied
    assert len(stored) == 3 + 9 * ours.cfg.n_layers - tied
    assert json.loads((out / "generation_config.json").read_text()) == {
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}

    theirs = assert_export_round_trips(ours, out, LlamaForCausalLM, 512)
    assert theirs.dtype == torch.float32 and theirs.config.eos_token_id == 2


def test_bfloat16_load_and_save(tmp_path):
    ours = random_tenacia_model(tied=True)
    save_hf_dir(ours, tmp_path / "f32")
    half = load_hf_dir(tmp_path / "f32", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.output.weight is half.tok_embeddings.weight
    assert half.rope_cos.dtype == torch.float32  # the rotary table is not rounded to bf16
    tokens = torch.randint(0, 512, (1, 16), generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        reference = ours(tokens)
        assert float((half(tokens) - reference).abs().max()) < 0.05 * float(reference.abs().max())

    save_hf_dir(half, tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
    assert theirs.dtype == torch.bfloat16
    assert torch.equal(theirs.model.embed_tokens.weight, half.tok_embeddings.weight)
