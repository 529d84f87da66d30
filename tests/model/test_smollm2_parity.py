"""SmolLM2-135M-Instruct: the converted directory is a clean transformers checkpoint, and tenacia
reproduces transformers' logits and greedy tokens on it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tenacia.model.generate import generate

pytestmark = pytest.mark.smollm2

GREEDY_TOKENS = 32


def chat_ids(tokenizer, text: str) -> list[int]:
    chat = [{"role": "user", "content": text}]
    rendered = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_converted_dir_is_a_clean_transformers_checkpoint(smollm2_path, smollm2_models):
    config = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    with safe_open(smollm2_path / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "F32"
    assert "lm_head.weight" not in names and len(names) == 2 + 9 * 30
    _, _, tokenizer = smollm2_models
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.chat_template and "<|im_start|>assistant" in tokenizer.chat_template
    generation = json.loads((smollm2_path / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2
    record = json.loads((smollm2_path / "tenacia_conversion.json").read_text())
    assert record["max_abs_logit_diff_vs_gguf"] <= 1e-5 * record["max_abs_logit"]


@pytest.mark.slow
def test_converted_dir_reproduces_gguf_logits(smollm2_path, smollm2_models):
    """Re-checks a cached conversion against the GGUF itself (the conversion checks it once)."""
    from transformers import AutoModelForCausalLM

    from tenacia.data.smollm2 import gguf_path

    gguf = gguf_path()
    source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    hf, ours, tokenizer = smollm2_models
    ids = torch.tensor([chat_ids(tokenizer, "Name three colours.")])
    with torch.inference_mode():
        want = source(ids).logits
        torch.testing.assert_close(hf(ids).logits, want, rtol=0, atol=1e-5 * float(want.abs().max()))
        torch.testing.assert_close(ours(ids), want, rtol=0, atol=1e-4 * float(want.abs().max()))


def test_logits_match_transformers(smollm2_models):
    hf, ours, tokenizer = smollm2_models
    ids = torch.tensor([chat_ids(tokenizer, "Explain in one sentence why the sky is blue.")])
    with torch.inference_mode():
        theirs, mine = hf(ids).logits, ours(ids)
    bound = 1e-4 * float(theirs.abs().max())
    diff = float((mine - theirs).abs().max())
    assert diff <= bound, f"max |logit diff| {diff:.3g} > 1e-4 * max|logit| = {bound:.3g}"


def test_greedy_32_tokens_match_transformers(smollm2_models):
    hf, ours, tokenizer = smollm2_models
    prompt = chat_ids(tokenizer, "Write a short story about a lighthouse keeper.")
    with torch.inference_mode():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=GREEDY_TOKENS, do_sample=False)
    theirs = out[0, len(prompt):].tolist()
    assert len(theirs) == GREEDY_TOKENS, "the reference stopped early; pick a longer prompt"
    mine = generate(ours, prompt, GREEDY_TOKENS, stop_ids={tokenizer.eos_token_id})
    assert mine == theirs, (tokenizer.decode(mine), tokenizer.decode(theirs))
