"""A ``deepseek_v3`` directory saved by transformers, served by ``tenacia serve`` over HTTP: greedy
completions (streamed and not) equal transformers' ``generate``, logprobs included.

Tie rules, written down because a near-tie would make the comparison a coin toss: tenacia's
router sends a token to the lower-indexed expert among equal scores (``moe.route``), transformers
to whichever ``topk`` returns, and the engine's logits differ from transformers' in float32
summation order (~1e-6). The test therefore checks, on transformers' own sequence, that every
routing choice has a margin over 1e-5 (``routing_margin``) and every greedy token a logit gap
over 1e-4, so that neither rule decides anything here."""

from __future__ import annotations

import json

import pytest
import torch

from tests.model.deepseek_tiny import routing_margin

from .tiny import ServerProcess

PROMPT_LEN, NEW = 12, 16


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, tokenizer):
    """A random tiny DeepseekV3ForCausalLM (low-rank queries, 1 dense + 2 MoE layers) with the
    tests' byte-level BPE, saved by transformers."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    from tenacia.data.tokenizer import CHAT_TEMPLATE, ENDOFTEXT, IM_END, IM_START, PAD

    tok = tokenizer
    torch.manual_seed(0)
    config = DeepseekV3Config(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
        kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, v_head_dim=12, qk_nope_head_dim=8, n_group=4,
        topk_group=2, num_experts_per_tok=2, first_k_dense_replace=1, max_position_embeddings=128,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        hf.lm_head.weight.mul_(10)  # spread the logits: greedy tokens wander through the vocabulary
        for layer in hf.model.layers[1:]:
            layer.mlp.gate.weight.normal_(0, 0.5)
            layer.mlp.gate.e_score_correction_bias.uniform_(-0.05, 0.05)
    out = tmp_path_factory.mktemp("deepseek-hf")
    hf.save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE, "bos_token": IM_START,
        "eos_token": IM_END, "pad_token": PAD, "unk_token": ENDOFTEXT}))
    return out


@pytest.fixture(scope="module")
def expected(hf_dir, tokenizer):
    """(prompt ids, transformers' greedy ids, their logprobs, the text of those ids)."""
    from transformers import AutoModelForCausalLM

    from tenacia.model.hf import load_hf_dir

    torch.set_num_threads(1)
    tok = tokenizer
    prompt = tok.encode("def parse_args(argv):\n    parser = argparse").ids[:PROMPT_LEN]
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        ids = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False)
        logits = hf(ids).logits[0, len(prompt) - 1:-1]  # (NEW, vocab): the rows that chose each new token
    new = ids[0, len(prompt):]
    assert len(new) == NEW and min(new.tolist()) >= 4  # no special token: the text is every token's
    top2 = logits.topk(2, dim=-1).values
    assert (top2[:, 0] - top2[:, 1]).min().item() > 1e-4
    assert routing_margin(load_hf_dir(hf_dir), ids) > 1e-5
    logprobs = logits.log_softmax(-1).gather(1, new[:, None])[:, 0].tolist()
    return prompt, new.tolist(), logprobs, tok.decode(new.tolist())


@pytest.fixture(scope="module")
def client(hf_dir):
    from openai import OpenAI

    with ServerProcess(hf_dir, "--kv-cache-tokens", "1024", "--name", "moe") as server:
        assert "KV cache 1024 tokens (288 bytes a token)" in server.output()  # 3 layers x (16 + 8) x 4 bytes
        with OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60) as c:
            yield c


def test_greedy_completion_equals_transformers_generate(client, expected):
    prompt, _, logprobs, text = expected
    r = client.completions.create(model="moe", prompt=prompt, max_tokens=NEW, temperature=0, logprobs=0,
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == text and r.usage.completion_tokens == NEW
    got = r.choices[0].logprobs.token_logprobs
    assert max(abs(a - b) for a, b in zip(got, logprobs, strict=True)) < 1e-4


def test_streamed_greedy_completion_equals_transformers_generate(client, expected):
    """Streamed after the first test: the repeated prompt's full blocks come from the prefix cache."""
    prompt, _, _, text = expected
    chunks = list(client.completions.create(model="moe", prompt=prompt, max_tokens=NEW, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
