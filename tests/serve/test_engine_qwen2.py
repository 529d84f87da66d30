"""A Qwen2 directory served by the engine: the q/k/v biases, fused into the packed qkv
projection, give transformers' greedy tokens, through chunked prefill, paging and batching."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from tenacia.model.hf import load_hf_dir
from tenacia.serve.config import EngineConfig
from tenacia.serve.engine.llm_engine import LLMEngine
from tenacia.serve.engine.sequence import SamplingParams

from .tiny import one_thread, train_tokenizer  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

NEW_TOKENS = 20


def random_qwen2(vocab_size: int) -> Qwen2ForCausalLM:
    """Tiny GQA Qwen2, every tensor random (biases large enough to matter)."""
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=160,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if name.endswith("norm.weight") else 0.0
            p.copy_(base + torch.randn(p.shape) * (0.5 if name.endswith(".bias") else 0.15))
    return model


def test_engine_greedy_tokens_match_transformers_generate(tmp_path):
    tokenizer = train_tokenizer()
    hf = random_qwen2(tokenizer.get_vocab_size())
    hf.save_pretrained(tmp_path / "qwen2")
    ours = load_hf_dir(tmp_path / "qwen2")
    assert ours.cfg.qkv_bias

    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, ours.cfg.vocab_size, (n,), generator=gen).tolist() for n in (3, 11, 29)]
    with torch.inference_mode():
        want = {f"r{i}": hf.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, do_sample=False)[0, len(p):].tolist()
                for i, p in enumerate(prompts)}

    # Small blocks and prefill budget: the 29-token prompt is prefilled in chunks across blocks
    # while the others decode beside it.
    engine = LLMEngine(ours, tokenizer, eos_ids=set(), device=torch.device("cpu"),
                       cfg=EngineConfig(block_size=4, max_batched_tokens=16, kv_cache_tokens=512))
    assert all(layer.qkv.bias is not None for layer in engine.runner.model.layers)
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    for rid, prompt in zip(want, prompts, strict=True):
        engine.add_request(rid, prompt, params)
    got: dict[str, list[int]] = {rid: [] for rid in want}
    while engine.has_work():
        for delta in engine.step():
            got[delta.request_id] += delta.token_ids
    assert got == want
