"""The decode stack (``engine/cpu/decode_stack.py``): a decode step's decoder layers in one call
into the kernels, for every build this CPU runs, equal to the same model run layer by layer
(the kernels' separate calls) and to the plain torch backend, for every batch from 1 sequence to
the engine's largest (and to the torch backend for a few of them), on both attention paths of
the kernels, with and without a qkv bias, the work shared by two threads; and taken by the
engine only where every decode product runs in the kernels' panels, where the engine's greedy answers are those of the plain forward."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tenacia.model.llama import Llama
from tenacia.serve.config import EngineConfig
from tenacia.serve.engine.attention import PagedAttention
from tenacia.serve.engine.backend import TorchBackend
from tenacia.serve.engine.cpu import build as decode_build
from tenacia.serve.engine.cpu import kernels as decode_kernels
from tenacia.serve.engine.cpu.backend import KernelBackend
from tenacia.serve.engine.cpu.decode_stack import DecodeStack
from tenacia.serve.engine.kv_cache import CacheSpec, PagedKVCache
from tenacia.serve.engine.llm_engine import LLMEngine
from tenacia.serve.engine.mirror import DecodeLayout
from tenacia.serve.engine.packed import PackedLlama
from tenacia.serve.engine.sequence import SamplingParams
from tenacia.shape import ModelConfig

from ..conftest import needs_cc

ISAS = [pytest.param("avx512", marks=[pytest.mark.avx512, needs_cc]),
        pytest.param("avx2", marks=[pytest.mark.avx2, needs_cc]),
        pytest.param("generic", marks=[needs_cc])]
BLOCK = 16


@pytest.fixture(params=ISAS)
def kernels(request) -> decode_kernels.Kernels:
    lib = decode_build.library(request.param)
    assert not isinstance(lib, str), lib
    return decode_kernels.Kernels(request.param, lib)


def small_llama(heads: int, kv_heads: int, head_dim: int, qkv_bias: bool) -> Llama:
    cfg = ModelConfig(preset="micro", dim=heads * head_dim, n_heads=heads, n_kv_heads=kv_heads, n_layers=2,
                      ffn_dim=168, vocab_size=128, max_seq_len=256, qkv_bias=qkv_bias)
    model = Llama(cfg)
    model.reset_parameters(seed=heads)
    with torch.no_grad():
        if qkv_bias:
            for layer in model.layers:
                for lin in (layer.attention.wq, layer.attention.wk, layer.attention.wv):
                    lin.bias.normal_(0.0, 0.5)
    return model.eval()


def decode_once(packed: PackedLlama, stored: Tensor, lengths: list[int], tokens: Tensor):
    """One decode step of ``len(lengths)`` sequences over a cache holding ``stored``: the hidden
    states and everything the step wrote (cache and mirror)."""
    B, spec = len(lengths), CacheSpec.grouped(stored.size(3), stored.size(4))
    per_seq = -(-max(lengths) // BLOCK)
    cache = PagedKVCache(n_layers=stored.size(1), spec=spec, num_blocks=B * per_seq, block_size=BLOCK,
                         dtype=torch.float32, device=torch.device("cpu"))
    cache.k.copy_(stored[0])
    cache.v.copy_(stored[1])
    tables = [list(range(b * per_seq, (b + 1) * per_seq)) for b in range(B)]
    slots = torch.tensor([t[(n - 1) // BLOCK] * BLOCK + (n - 1) % BLOCK for t, n in zip(tables, lengths, strict=True)])
    attention = PagedAttention(cache, packed.backend)
    attention.begin_decode(DecodeLayout(slots, tuple(range(B)), lengths, tables))
    with torch.inference_mode():
        hidden = packed.hidden(tokens, torch.tensor(lengths) - 1, attention, decode=True)
    return hidden, cache.k, cache.v, attention.mirror.k, attention.mirror.v


@pytest.mark.parametrize("heads, kv_heads, head_dim, qkv_bias", [(3, 1, 64, False), (4, 2, 48, True)])
def test_the_stack_equals_the_layers_one_by_one_for_every_batch_size_and_torch(kernels, heads, kv_heads, head_dim,
                                                                               qkv_bias):
    """(3, 1, 64) takes the kernels' register-resident attention, (4, 2, 48) the general one."""
    model = small_llama(heads, kv_heads, head_dim, qkv_bias)
    stacked = PackedLlama(model, KernelBackend(kernels, None))
    assert stacked.decode_stack is not None, stacked.backend.describe()
    by_layer = PackedLlama(model, KernelBackend(kernels, None))
    by_layer.decode_stack = None
    plain = PackedLlama(model, TorchBackend())
    gen = torch.Generator().manual_seed(head_dim)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for B in range(1, EngineConfig().max_num_seqs + 1):
            lengths = [1 + (37 * b + B) % 90 for b in range(B)]
            blocks = B * -(-max(lengths) // BLOCK)
            stored = torch.randn(2, 2, blocks * BLOCK, kv_heads, head_dim, generator=gen)
            tokens = torch.randint(0, 128, (B,), generator=gen)
            got = decode_once(stacked, stored, lengths, tokens)
            for g, want in zip(got, decode_once(by_layer, stored, lengths, tokens), strict=True):
                torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()),
                                           msg=lambda m, B=B: f"{B} seqs, against the layers one by one: {m}")
            if B in (1, 5, 16, 32):
                for g, want in zip(got, decode_once(plain, stored, lengths, tokens), strict=True):
                    torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()),
                                               msg=lambda m, B=B: f"{B} seqs, against torch: {m}")
    finally:
        torch.set_num_threads(before)


def test_a_decode_product_outside_the_kernels_keeps_the_layers_one_by_one(kernels):
    """A layer's decode product outside the kernels' panels (a shape whose panels could not be
    built): the stack cannot run, and the start-up line says why."""
    model = small_llama(3, 1, 64, False)
    backend = KernelBackend(kernels, None)
    packed = PackedLlama(model, backend)
    assert packed.decode_stack is not None and "one call" in backend.describe()[0]
    packed.layers[1].wo.decode_impl = "mkl-packed"
    assert DecodeStack.why_not(packed.layers) == "layer 1's wo product does not run in the kernels' panels in a decode"
    packed.decode_stack = None
    backend.arrange_decode(packed)
    assert packed.decode_stack is None
    assert "layer by layer: layer 1's wo product" in backend.describe()[0]


def test_the_engine_decodes_through_the_stack_as_the_plain_forward_does(kernels, model, tokenizer, monkeypatch):
    """The products in their default layouts (the kernels' panels for a decode): the engine's
    decode steps run in the stack, and its greedy tokens are those of the plain forward."""
    monkeypatch.setenv(decode_kernels.ISA_ENV, kernels.isa)
    engine = LLMEngine(model, tokenizer, eos_ids={2}, cfg=EngineConfig(products="default"), device=torch.device("cpu"))
    assert engine.runner.model.decode_stack is not None, engine.backend.describe()
    texts = ["def", "import json\nclass Decoder(object):", "The quick brown fox jumps over the lazy dog. " * 3]
    prompts = [tokenizer.encode(t).ids for t in texts]
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    got: dict[str, list[int]] = {}
    while engine.has_work():
        for d in engine.step():
            got.setdefault(d.request_id, []).extend(d.token_ids)
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            ids = list(p)
            for _ in range(8):
                ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
            assert got[f"r{i}"] == ids[len(p):]
