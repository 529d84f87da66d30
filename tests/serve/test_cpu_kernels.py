"""The decode kernels, every build this CPU runs (avx512: decode_kernels.c; avx2 and generic:
decode_kernels_vec.c): built with the system compiler; the GEMM equal to F.linear for every row
count it takes and used by PackedLinear for few rows only; the fused elementwise kernels equal to
the torch ops they replace; all of it invisible in the engine's answers. A build the CPU lacks
the instruction set for is skipped with the reason (tests/conftest.py); one it has must build."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from tenacia.serve.config import EngineConfig
from tenacia.serve.engine.backend import rms_norm, rotate
from tenacia.serve.engine.cpu import build as decode_build
from tenacia.serve.engine.cpu import kernels as decode_kernels
from tenacia.serve.engine.cpu.backend import KernelBackend
from tenacia.serve.engine.cpu.products import PackedLinear
from tenacia.serve.engine.llm_engine import LLMEngine
from tenacia.serve.engine.sequence import SamplingParams

from ..conftest import needs_cc
from .tiny import one_thread  # noqa: F401 (a fixture)

ISAS = [pytest.param("avx512", marks=[pytest.mark.avx512, needs_cc]),
        pytest.param("avx2", marks=[pytest.mark.avx2, needs_cc]),
        pytest.param("generic", marks=[needs_cc])]


@pytest.fixture(params=ISAS)
def kernels(request) -> decode_kernels.Kernels:
    """One build of the kernels. On a CPU with its instruction set it must build and load: in CI
    (where .ci/run installs gcc) a missing compiler fails here rather than skipping."""
    lib = decode_build.library(request.param)
    assert not isinstance(lib, str), lib
    return decode_kernels.Kernels(request.param, lib)


def test_the_kernels_build_and_load_here(kernels):
    assert decode_build.missing(kernels.isa) is None


def test_the_engine_takes_the_best_build_or_the_one_forced(monkeypatch):
    monkeypatch.delenv(decode_kernels.ISA_ENV, raising=False)
    chosen, isa = decode_kernels.choose()
    best = next((i for i in decode_kernels.ISAS if decode_build.missing(i) is None), None)
    assert chosen is None or isa == best == chosen.isa
    assert decode_kernels.choose(enabled=False) == (None, "--no-decode-kernels")
    monkeypatch.setenv(decode_kernels.ISA_ENV, "torch")
    assert decode_kernels.choose() == (None, "TENACIA_ISA=torch")
    monkeypatch.setenv(decode_kernels.ISA_ENV, "sse9")
    with pytest.raises(ValueError, match="avx512, avx2, generic, torch"):
        decode_kernels.choose()
    for isa in decode_kernels.ISAS:
        monkeypatch.setenv(decode_kernels.ISA_ENV, isa)
        forced, state = decode_kernels.choose()
        assert (forced.isa if forced else state) == isa or state == decode_build.missing(isa)


# Every row count a product of the kernels' panels meets up to here: a decode step's (up to
# EngineConfig.max_num_seqs), a prefill's where the start-up timing chose the panels (timed at
# products.PREFILL_ROWS) and, past both, a 16-row block, an 8, 4, 2 and 1-row tail of each kind.
ROW_COUNTS = range(1, 201)


def test_the_row_counts_cover_the_engines_batches():
    from tenacia.serve.engine.cpu.products import PREFILL_ROWS

    assert max(ROW_COUNTS) >= max(EngineConfig().max_num_seqs, PREFILL_ROWS, decode_kernels.MAX_ROWS)


@pytest.mark.parametrize("out_features, in_features, bias", [(37, 19, True), (64, 576, False), (960, 576, True)])
@pytest.mark.parametrize("threads", [1, 2])
def test_equals_f_linear_for_every_row_count(kernels, out_features, in_features, bias, threads):
    """Every row count from 1 to 200 (``ROW_COUNTS``) and a prefill chunk of the engine's largest
    (``EngineConfig.max_batched_tokens``) on the smaller shapes; the decode's and a few more on
    SmolLM2's q/k/v shape (every count there would add seconds under load, for no other path)."""
    gen = torch.Generator().manual_seed(out_features)
    weight = torch.randn(out_features, in_features, generator=gen)
    b = torch.randn(out_features, generator=gen) if bias else None
    lin = kernels.small_linear(weight, b)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        small = out_features < 960
        counts = [*ROW_COUNTS, EngineConfig().max_batched_tokens] if small else [*range(1, 17), 37, 128, 200]
        for rows in counts:
            x = torch.randn(rows, in_features, generator=gen)
            want = F.linear(x, weight, b)
            got = lin(x)
            assert got.shape == (rows, out_features)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        wide = torch.randn(5, 2 * in_features, generator=gen)[:, ::2]  # not contiguous
        torch.testing.assert_close(lin(wide), F.linear(wide, weight, b), rtol=1e-5, atol=1e-4)
    finally:
        torch.set_num_threads(before)


def test_packed_linear_sends_few_rows_to_the_kernel_and_many_to_mkl(kernels):
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(96, 64, generator=gen)
    lin = PackedLinear(weight, kernels=kernels)
    assert lin.small is not None
    calls = []
    kernel = lin.small
    lin.small = lambda x: calls.append(x.size(0)) or kernel(x)
    for rows in (1, 16, 17, 200):
        x = torch.randn(rows, 64, generator=gen)
        torch.testing.assert_close(lin(x), F.linear(x, weight), rtol=1e-5, atol=1e-4)
    assert calls == [1, 16]
    assert PackedLinear(weight, kernels=None).small is None


@pytest.mark.parametrize("dim", [576, 37])
@pytest.mark.parametrize("rows", [5, 100])  # a decode step's rows on one thread, a prefill's shared
def test_add_rms_norm_equals_the_residual_add_and_rms_norm(kernels, dim, rows):
    gen = torch.Generator().manual_seed(dim)
    x, delta = torch.randn(rows, dim, generator=gen) * 3, torch.randn(rows, dim, generator=gen)
    weight = torch.randn(dim, generator=gen)
    want_x = x + delta
    want = rms_norm(want_x, weight, 1e-5)
    got = kernels.add_rms_norm(x, delta, weight, 1e-5)  # x is updated in place
    torch.testing.assert_close(x, want_x, rtol=0, atol=0)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(kernels.add_rms_norm(x, None, weight, 1e-5), want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x, want_x, rtol=0, atol=0)  # no delta: x untouched


@pytest.mark.parametrize("hd, rows", [(64, 4), (16, 4), (40, 4), (64, 100)])
def test_rotary_rotates_q_and_k_in_place_and_leaves_v(kernels, hd, rows):
    from tenacia.model.llama import rotary_table

    gen = torch.Generator().manual_seed(2)
    heads, kv = 9, 3
    x = torch.randn(rows, (heads + 2 * kv) * hd, generator=gen)
    cos, sin = rotary_table(hd, 512, 10000.0)
    positions = torch.tensor([0, 7, 100, 511] * (rows // 4))
    want = rotate(x[:, :(heads + kv) * hd].view(rows, heads + kv, 1, hd),
                  cos[positions].unsqueeze(1).unsqueeze(1), sin[positions].unsqueeze(1).unsqueeze(1))
    v = x[:, (heads + kv) * hd:].clone()
    kernels.rotary_(x, heads + kv, hd, cos[positions].contiguous(), sin[positions].contiguous())
    torch.testing.assert_close(x[:, :(heads + kv) * hd], want.reshape(rows, -1), rtol=1e-6, atol=1e-6)
    assert torch.equal(x[:, (heads + kv) * hd:], v)
    with pytest.raises(ValueError, match="must be even"):
        kernels.rotary_(x, 1, hd - 1, cos[:rows, :hd - 1].contiguous(), sin[:rows, :hd - 1].contiguous())


def test_silu_mul_equals_torch_over_the_whole_float_range(kernels):
    gen = torch.Generator().manual_seed(3)
    gate = torch.cat([torch.linspace(-120, 120, 1001), torch.randn(999, generator=gen) * 4])  # exp under/overflow too
    up = torch.randn(2000, generator=gen)
    got = kernels.silu_mul(torch.cat([gate, up]).view(1, -1))
    torch.testing.assert_close(got[0], F.silu(gate) * up, rtol=2e-6, atol=1e-7)
    with pytest.raises(ValueError, match="contiguous float32"):
        kernels.silu_mul(torch.zeros(2, 8, dtype=torch.float64))


def test_silu_mul_pair_takes_gate_and_up_from_two_products(kernels):
    gen = torch.Generator().manual_seed(4)
    gate, up = torch.randn(100, 1536, generator=gen) * 4, torch.randn(100, 1536, generator=gen)
    torch.testing.assert_close(kernels.silu_mul_pair(gate, up), F.silu(gate) * up, rtol=2e-6, atol=1e-6)
    with pytest.raises(ValueError, match="same"):
        kernels.silu_mul_pair(gate, up[:, :8].contiguous())


def test_a_failing_compiler_is_reported_with_its_message(tmp_path, monkeypatch):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho 'cc: fatal error: boom' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("TENACIA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(decode_kernels.Unavailable, match="boom"):
        decode_build.compile_library(str(cc))
    assert not list((tmp_path / "cache" / "kernels").glob("*.so"))  # nothing half-built left behind


@needs_cc
def test_a_cached_build_that_does_not_load_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TENACIA_CACHE", str(tmp_path))
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    built = decode_build.compile_library(cc, "generic")
    built.write_bytes(b"not a shared object")  # as a truncated file would be
    lib = decode_build.load_library(cc, "generic")
    assert hasattr(lib, "tenacia_small_gemm") and built.stat().st_size > 1000


def test_the_build_cache_key_reads_every_file_the_sources_include():
    """A build is cached under a hash of the C it is made of: every file a source includes (a
    change to any of them must build again) is among the files hashed."""
    hashed = {p.name for p in decode_build.C_SOURCES}
    for source in decode_build.C_SOURCES:
        for line in source.read_text().splitlines():
            if line.startswith('#include "'):
                assert line.split('"')[1] in hashed, f"{source.name} includes {line}, outside the cache key"
    assert {"kernels_avx512.c", "kernels_vec.c", "kv_ahead.c", "decode_stack.c"} <= hashed


def test_the_engine_answers_the_same_with_and_without_the_kernel(kernels, model, tokenizer, monkeypatch):
    monkeypatch.setenv(decode_kernels.ISA_ENV, kernels.isa)
    texts = ["def", "import json\nclass Decoder(object):", "The quick brown fox jumps over the lazy dog. " * 3]
    answers = []
    for small in (True, False):
        engine = LLMEngine(model, tokenizer, eos_ids={2}, cfg=EngineConfig(decode_kernels=small), device=torch.device("cpu"))
        assert isinstance(engine.backend, KernelBackend) is small
        params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
        for i, t in enumerate(texts):
            engine.add_request(f"r{i}", tokenizer.encode(t).ids, params)
        tokens: dict[str, list[int]] = {}
        while engine.has_work():
            for d in engine.step():
                tokens.setdefault(d.request_id, []).extend(d.token_ids)
        answers.append(tokens)
    assert answers[0] == answers[1]
    assert all(len(v) == 16 for v in answers[0].values())


@pytest.mark.parametrize("heads, kv_heads, hd", [(9, 3, 64), (4, 2, 128), (10, 2, 48), (4, 4, 16)])
def test_decode_attention_equals_sdpa_over_each_sequences_own_keys(kernels, heads, kv_heads, hd):
    """(9, 3, 64) and (4, 2, 128) take the register-resident path, (10, 2, 48) and (4, 4, 16) the
    general one; lengths cross the kernel's 32-key blocks and stop short of the mirror's capacity."""
    gen = torch.Generator().manual_seed(hd)
    lengths = [1, 31, 32, 33, 100, 7]
    B, cap = len(lengths), 128
    fused = torch.randn(B, (heads + 2 * kv_heads) * hd, generator=gen)  # q is a view of a fused product
    q = fused[:, :heads * hd].view(B, heads, 1, hd)
    k = torch.randn(B, kv_heads, cap, hd, generator=gen)
    v = torch.randn(B, kv_heads, cap, hd, generator=gen)
    got = kernels.decode_attention(q, k, v, torch.tensor(lengths))
    for b, n in enumerate(lengths):
        want = F.scaled_dot_product_attention(q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n], enable_gqa=True)
        torch.testing.assert_close(got[b:b + 1], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("heads, kv_heads, hd", [(9, 3, 64), (4, 1, 64), (2, 1, 128), (10, 2, 48)])
def test_decode_attention_at_every_edge_of_its_blocks_uses_no_key_or_value_past_the_length(kernels, heads, kv_heads, hd):
    """The lengths at the edges of the kernels' blocks (16 scores a vector, 32 keys a block, 4 and
    8 keys a fold), one past a block and a long context, against SDPA; the mirror's rows past
    each length hold NaN, which any key or value used there would carry into the output."""
    gen = torch.Generator().manual_seed(3 * hd + heads)
    lengths = [1, 2, 3, 4, 5, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 100, 3000]
    B, cap = len(lengths), 3008
    q = torch.randn(B, heads, 1, hd, generator=gen)
    k = torch.full((B, kv_heads, cap, hd), float("nan"))
    v = torch.full((B, kv_heads, cap, hd), float("nan"))
    for b, n in enumerate(lengths):
        k[b, :, :n] = torch.randn(kv_heads, n, hd, generator=gen) * 2
        v[b, :, :n] = torch.randn(kv_heads, n, hd, generator=gen)
    got = kernels.decode_attention(q, k, v, torch.tensor(lengths))
    for b, n in enumerate(lengths):
        want = F.scaled_dot_product_attention(q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n], enable_gqa=True)
        torch.testing.assert_close(got[b:b + 1], want, rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"length {n}: {m}")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("heads, kv_heads, hd", [(9, 3, 64), (10, 2, 48)])
def test_the_kernel_backends_decode_attention_equals_the_torch_backends_for_every_batch_size(kernels, heads, kv_heads,
                                                                                             hd):
    """Store and attend through a real decode mirror, for every batch from 1 sequence to the
    engine's largest (``EngineConfig.max_num_seqs``), on both attention paths of the kernel
    (register-resident for (9, 3, 64), general for (10, 2, 48)): the same output, cache and mirror
    as the torch backend (SDPA with a mask)."""
    from tenacia.serve.engine.backend import TorchBackend
    from tenacia.serve.engine.kv_cache import CacheSpec, PagedKVCache
    from tenacia.serve.engine.mirror import DecodeLayout, DecodeMirror

    bs, gen = 16, torch.Generator().manual_seed(hd)
    for B in range(1, EngineConfig().max_num_seqs + 1):
        lengths = [1 + (37 * b + B) % 90 for b in range(B)]
        per_seq = -(-max(lengths) // bs)
        tables = [list(range(b * per_seq, (b + 1) * per_seq)) for b in range(B)]
        slots = torch.tensor([t[(n - 1) // bs] * bs + (n - 1) % bs for t, n in zip(tables, lengths, strict=True)])
        layout = DecodeLayout(slots, tuple(range(B)), lengths, tables)
        fused = torch.randn(B, (heads + 2 * kv_heads) * hd, generator=gen)  # q, k, v: views of one product
        q = fused[:, :heads * hd].view(B, heads, 1, hd)
        k = fused[:, heads * hd:(heads + kv_heads) * hd].view(B, kv_heads, 1, hd)
        v = fused[:, (heads + kv_heads) * hd:].view(B, kv_heads, 1, hd)
        stored = torch.randn(2, 1, B * per_seq * bs, kv_heads, hd, generator=gen)
        results = []
        for backend in (KernelBackend(kernels, None), TorchBackend()):
            cache = PagedKVCache(n_layers=1, spec=CacheSpec.grouped(kv_heads, hd), num_blocks=B * per_seq,
                                 block_size=bs, dtype=torch.float32, device=torch.device("cpu"))
            cache.k.copy_(stored[0])
            cache.v.copy_(stored[1])
            mirror = DecodeMirror(cache)
            mirror.begin(layout)
            out = backend.decode_attention(0, q, k, v, cache.k[0], cache.v[0], slots, mirror)
            results.append((out, cache.k, cache.v, mirror.k, mirror.v))
        for got, want in zip(*results, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m, B=B: f"{B} sequences: {m}")


@pytest.mark.parametrize("rows", [1, 2, 3, 16, 17])
@pytest.mark.parametrize("cols", [3, 16, 49152, 49157])
def test_argmax_rows_is_torchs_first_maximum(kernels, rows, cols):
    """Random rows, and rows whose maximum repeats (in other lanes, in the tail past the last
    whole vector), is -inf everywhere, is +inf, or is a tie of -0.0 and 0.0: the same index as
    ``max(dim=1).indices``, the first maximum."""
    gen = torch.Generator().manual_seed(rows * 100_003 + cols)
    logits = torch.randn(rows, cols, generator=gen)
    special = [
        lambda row: row.fill_(float("-inf")),
        lambda row: row.__setitem__([cols - 1, cols // 2, 1], 9.0),
        lambda row: row.__setitem__([cols // 3, 0], float("inf")),
        lambda row: (row.fill_(-1.0), row.__setitem__(cols - 1, 0.0), row.__setitem__(cols // 2, -0.0)),
        lambda row: row.__setitem__(cols - 1, 9.0),
    ]
    for r in range(min(rows, len(special))):
        special[r](logits[r])
    want = logits.max(dim=1).indices
    assert torch.equal(kernels.argmax_rows(logits), want)
    out = torch.empty(rows, dtype=torch.int64)  # the kernel's own answer, not torch's fallback
    assert kernels._lib.tenacia_argmax_rows(logits.data_ptr(), rows, cols, cols, out.data_ptr(), 2) == 0
    assert torch.equal(out, want)


def test_argmax_rows_answers_as_torch_for_a_nan_and_for_other_layouts(kernels):
    """A NaN in any row: torch's answer for the batch (its max propagates NaN); a row stride
    longer than the row is the kernel's; columns that are not contiguous are torch's."""
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(5, 1000, generator=gen)
    logits[3, 17] = float("nan")
    assert torch.equal(kernels.argmax_rows(logits), logits.max(dim=1).indices)
    wide = torch.randn(4, 1200, generator=gen)
    assert torch.equal(kernels.argmax_rows(wide[:, :1000]), wide[:, :1000].max(dim=1).indices)
    assert torch.equal(kernels.argmax_rows(wide[:, ::2]), wide[:, ::2].max(dim=1).indices)
    assert kernels.argmax_rows(torch.empty(0, 1000)).shape == (0,)
