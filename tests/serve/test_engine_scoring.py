"""Prompt scoring in the engine (``SamplingParams.prompt_logprobs``): every prompt token scored
once, across chunked prefills and with the prompt already in the prefix cache, equal to a plain
forward; ``max_tokens=0`` generates nothing."""

from __future__ import annotations

import pytest
import torch

from tenacia.serve.engine.sequence import SamplingParams

from .test_engine import make_engine
from .tiny import one_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def scored(engine, prompt: list[int], params: SamplingParams, rid: str = "r"):
    engine.add_request(rid, prompt, params)
    prompt_lps, generated = None, []
    while engine.has_work():
        for d in engine.step():
            prompt_lps = d.prompt_logprobs if d.prompt_logprobs is not None else prompt_lps
            generated += d.token_ids
    return prompt_lps, generated


@pytest.mark.parametrize("chunk", [16, 2048])
def test_every_prompt_token_is_scored_once_like_a_forward(model, tokenizer, chunk):
    engine = make_engine(model, tokenizer, decode_kernels=False, max_batched_tokens=chunk, kv_cache_tokens=512)
    prompt = [(7 * i + 3) % 500 for i in range(53)]
    with torch.inference_mode():
        want = model(torch.tensor([prompt]))[0].log_softmax(-1)
    params = SamplingParams(max_tokens=0, temperature=0.0, prompt_logprobs=2)
    for attempt in range(2):  # the second time its blocks are in the prefix cache: still scored whole
        lps, generated = scored(engine, prompt, params, f"r{attempt}")
        assert generated == [] and len(lps) == len(prompt) and lps[0] is None
        for p in range(1, len(prompt)):
            assert lps[p].token_id == prompt[p]
            assert lps[p].logprob == pytest.approx(want[p - 1, prompt[p]].item(), abs=1e-4)
            assert [t for t, _ in lps[p].top] == want[p - 1].topk(2).indices.tolist()


def test_scoring_and_generating_together(model, tokenizer):
    engine = make_engine(model, tokenizer, decode_kernels=False, max_batched_tokens=8, kv_cache_tokens=512)
    prompt = list(range(40, 70))
    lps, generated = scored(engine, prompt, SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True,
                                                           prompt_logprobs=0, logprobs=0))
    assert len(generated) == 5 and len(lps) == len(prompt) and all(lp.top == [] for lp in lps[1:])
