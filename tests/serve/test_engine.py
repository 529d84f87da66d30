"""The engine in-process on a tiny random model: paged attention against a plain forward,
chunked prefill, preemption under a small cache, sampling parameters, seeds, stop strings."""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch

from tenacia.serve.config import EngineConfig
from tenacia.serve.engine.backend import TorchBackend
from tenacia.serve.engine.cpu import kernels as dk
from tenacia.serve.engine.cpu.backend import CpuBackend, KernelBackend
from tenacia.serve.engine.cpu.kernels import ISA_ENV
from tenacia.serve.engine.detokenizer import Detokenizer, TextState
from tenacia.serve.engine.llm_engine import LLMEngine
from tenacia.serve.engine.sampling import apply_penalties
from tenacia.serve.engine.sequence import InvalidRequest, SamplingParams, Sequence

from ..conftest import needs_cc
from .tiny import one_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
# the engine's backends on a CPU: the decode kernels (the best build this CPU runs; a compiler),
# torch ops with the timed CPU products (--no-decode-kernels), and the plain torch backend an
# accelerator runs (TENACIA_ISA=torch)
KERNELS = [pytest.param(True, id="decode-kernels", marks=[needs_cc]), pytest.param(False, id="cpu-products"),
           pytest.param("torch", id="torch-backend")]
BACKENDS = {True: KernelBackend, False: CpuBackend, "torch": TorchBackend}


def make_engine(model, tokenizer, decode_kernels=True, **cfg) -> LLMEngine:
    """``decode_kernels``: True, False or "torch" (the plain torch backend, as TENACIA_ISA=torch)."""
    env = {ISA_ENV: "torch"} if decode_kernels == "torch" else {}
    with mock.patch.dict(os.environ, env):
        engine = LLMEngine(model, tokenizer, eos_ids={2}, cfg=EngineConfig(decode_kernels=bool(decode_kernels), **cfg),
                           device=CPU)
    assert type(engine.backend) is BACKENDS[decode_kernels] or (decode_kernels is True and dk.available())
    return engine


def run(engine: LLMEngine, requests: dict[str, tuple[list[int], SamplingParams]]) -> dict:
    """Add all requests, step until done; returns request id -> {index: (tokens, text, logprobs, reason)}."""
    out: dict = {}
    for rid, (prompt, params) in requests.items():
        engine.add_request(rid, prompt, params)
    steps = 0
    while engine.has_work():
        for d in engine.step():
            tokens, text, lps, _ = out.setdefault(d.request_id, {}).get(d.index, ([], "", [], None))
            out[d.request_id][d.index] = (tokens + d.token_ids, text + d.text, lps + d.logprobs, d.finish_reason)
        steps += 1
        assert steps < 10_000
    return out


def prompts(tokenizer) -> list[list[int]]:
    texts = ["def", "import json\nclass Decoder(object):\n    def decode(self, s):",
             "The quick brown fox jumps over the lazy dog. " * 4]
    return [tokenizer.encode(t).ids for t in texts]


def reference_greedy(model, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """Greedy decoding with a full forward over the whole sequence at every step (no cache)."""
    ids, lps = list(prompt), []
    with torch.inference_mode():
        for _ in range(n):
            logp = model(torch.tensor([ids]))[0, -1].log_softmax(-1)
            ids.append(int(logp.argmax()))
            lps.append(float(logp[ids[-1]]))
    return ids[len(prompt):], lps


@pytest.mark.parametrize("kernels", KERNELS)
def test_paged_batched_chunked_matches_plain_forward(model, tokenizer, kernels):
    # Small blocks and a small prefill budget: sequences cross block boundaries and the longest
    # prompt is prefilled in chunks, while other sequences decode around it.
    engine = make_engine(model, tokenizer, block_size=4, max_batched_tokens=16, kv_cache_tokens=1024, decode_kernels=kernels)
    ps = prompts(tokenizer)
    assert len(ps[2]) > 16  # chunked
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, logprobs=0)
    out = run(engine, {f"r{i}": (p, params) for i, p in enumerate(ps)})
    for i, p in enumerate(ps):
        tokens, _, lps, reason = out[f"r{i}"][0]
        want_tokens, want_lps = reference_greedy(model, p, 12)
        assert tokens == want_tokens
        assert reason == "length"
        assert max(abs(a.logprob - b) for a, b in zip(lps, want_lps, strict=True)) < 1e-4
    assert engine.cache.allocator.num_free == engine.cache.allocator.num_blocks  # all blocks back


def test_a_long_prompt_arriving_while_others_decode_alternates_with_their_steps(model, tokenizer):
    """While sequences decode, a prompt's chunks take at most ``prefill_while_decoding`` tokens and
    each is followed by a decode step: no stream waits through the whole prompt; answers unchanged."""
    engine = make_engine(model, tokenizer, decode_kernels=False, block_size=4, max_batched_tokens=32,
                         prefill_while_decoding=8, kv_cache_tokens=1024)
    short, long = prompts(tokenizer)[0], prompts(tokenizer)[2]
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    engine.add_request("a", short, params)
    engine.add_request("b", short, params)
    schedule, steps = engine.scheduler.schedule, []
    engine.scheduler.schedule = lambda: (lambda b: steps.append(b and (b.prefill, sum(b.chunks))) or b)(schedule())
    out: dict[str, list[int]] = {}

    def step() -> None:
        for d in engine.step():
            out[d.request_id] = out.get(d.request_id, []) + d.token_ids

    step()  # both prompts in one prefill: nobody decodes yet, the whole budget
    engine.add_request("c", long, params)
    while len(out.get("c", [])) < 1:
        step()
    assert steps[0] == (True, 2 * len(short)) and len(long) > 3 * 8
    after = steps[1:]
    assert all(kind != after[i + 1][0] for i, (kind, _) in enumerate(after[:-1])), after  # in turns
    assert all(n <= 8 for kind, n in after if kind) and sum(n for kind, n in after if kind) == len(long), after
    while engine.has_work():
        step()
    for rid, prompt in (("a", short), ("b", short), ("c", long)):
        assert out[rid] == reference_greedy(model, prompt, 16)[0], rid


def test_small_cache_waits_and_preempts_but_answers_the_same(model, tokenizer):
    ps = prompts(tokenizer)[:2] * 3  # six sequences of 1 and ~20 prompt tokens
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    alone = {i: run(make_engine(model, tokenizer), {"a": (p, params)})["a"][0][0] for i, p in enumerate(ps)}
    engine = make_engine(model, tokenizer, block_size=4, kv_cache_tokens=64)  # ~1.5 sequences at a time
    out = run(engine, {f"r{i}": (p, params) for i, p in enumerate(ps)})
    assert {i: out[f"r{i}"][0][0] for i in range(len(ps))} == alone
    assert engine.scheduler.num_preemptions > 0
    assert engine.cache.allocator.num_free == engine.cache.allocator.num_blocks


def test_request_larger_than_the_whole_cache_is_rejected(model, tokenizer):
    engine = make_engine(model, tokenizer, block_size=4, kv_cache_tokens=64)
    with pytest.raises(InvalidRequest, match="whole KV cache") as err:
        engine.add_request("big", [5] * 40, SamplingParams(max_tokens=40))
    assert err.value.param == "max_tokens"
    with pytest.raises(InvalidRequest, match="context length"):
        engine.add_request("long", [5] * 10, SamplingParams(max_tokens=model.cfg.max_seq_len))
    assert not engine.has_work()


def test_seeded_sampling_does_not_depend_on_the_batch(model, tokenizer):
    ps = prompts(tokenizer)
    seeded = SamplingParams(max_tokens=24, temperature=1.0, seed=1234, ignore_eos=True)
    alone = run(make_engine(model, tokenizer), {"x": (ps[1], seeded)})["x"][0][0]
    others = {f"o{i}": (p, SamplingParams(max_tokens=30, temperature=1.0, ignore_eos=True)) for i, p in enumerate(ps)}
    crowded = run(make_engine(model, tokenizer, block_size=4), {**others, "x": (ps[1], seeded)})["x"][0][0]
    assert crowded == alone
    other_seed = run(make_engine(model, tokenizer), {"x": (ps[1], SamplingParams(
        max_tokens=24, temperature=1.0, seed=99, ignore_eos=True))})["x"][0][0]
    assert other_seed != alone


def test_n_choices_are_distinct_and_reproducible(model, tokenizer):
    params = SamplingParams(n=3, max_tokens=16, temperature=1.0, seed=5, ignore_eos=True)
    first = run(make_engine(model, tokenizer), {"r": (prompts(tokenizer)[1], params)})["r"]
    again = run(make_engine(model, tokenizer), {"r": (prompts(tokenizer)[1], params)})["r"]
    assert sorted(first) == [0, 1, 2]
    assert {i: c[0] for i, c in first.items()} == {i: c[0] for i, c in again.items()}
    assert len({tuple(c[0]) for c in first.values()}) == 3


def test_truncation_to_one_token_is_greedy(model, tokenizer):
    p = prompts(tokenizer)[1]
    greedy = run(make_engine(model, tokenizer), {"g": (p, SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True))})
    top_k = run(make_engine(model, tokenizer), {"k": (p, SamplingParams(max_tokens=10, temperature=1.5, top_k=1, ignore_eos=True))})
    top_p = run(make_engine(model, tokenizer), {"p": (p, SamplingParams(max_tokens=10, temperature=1.5, top_p=1e-6, ignore_eos=True))})
    assert greedy["g"][0][0] == top_k["k"][0][0] == top_p["p"][0][0]


def test_penalties_subtract_counts_of_generated_tokens():
    seq = Sequence(0, "r", 0, [9, 9], SamplingParams(frequency_penalty=0.5, presence_penalty=1.0),
                   torch.Generator(), frozenset())
    seq.output_ids = [5, 5, 7]
    plain = Sequence(1, "q", 0, [5], SamplingParams(), torch.Generator(), frozenset())
    plain.output_ids = [5]
    logits = apply_penalties(torch.zeros(2, 10), [seq, plain])
    assert logits[0, 5] == -2.0 and logits[0, 7] == -1.5 and logits[0, 9] == 0.0  # prompt tokens don't count
    assert bool((logits[1] == 0).all())


def test_negative_presence_penalty_makes_greedy_repeat(model, tokenizer):
    p = prompts(tokenizer)[0]
    plain = run(make_engine(model, tokenizer), {"a": (p, SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))})
    loop = run(make_engine(model, tokenizer), {"a": (p, SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True,
                                                                         presence_penalty=-2.0))})
    assert len(set(loop["a"][0][0])) < len(set(plain["a"][0][0]))


def test_stop_string_cuts_the_text_before_it(model, tokenizer):
    p = prompts(tokenizer)[1]
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    full = run(make_engine(model, tokenizer), {"a": (p, params)})["a"][0][1]
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert len(stop) == 3
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, stop=[stop, "never-seen-xyz"])
    _, text, _, reason = run(make_engine(model, tokenizer), {"a": (p, params)})["a"][0]
    assert reason == "stop"
    assert text == full[:full.index(stop)]


def test_min_tokens_holds_back_stop_strings_too(model, tokenizer):
    """As vLLM: no stop string is looked for before min_tokens tokens; one that ended there does
    not stop the sequence later."""
    p = prompts(tokenizer)[1]
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    full_tokens, full, _, _ = run(make_engine(model, tokenizer), {"a": (p, params)})["a"][0]
    stop = full[2:5]  # in the first few tokens' text
    assert len(stop) == 3 and full.index(stop) == 2
    without = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, stop=[stop])
    _, text, _, reason = run(make_engine(model, tokenizer), {"a": (p, without)})["a"][0]
    assert (text, reason) == (full[:2], "stop")  # without min_tokens it stops there
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, stop=[stop], min_tokens=12)
    tokens, text, _, reason = run(make_engine(model, tokenizer), {"a": (p, params)})["a"][0]
    later = full.find(stop, len(tokenizer.decode(full_tokens[:12])) - len(stop) + 1)
    if later < 0:
        assert (tokens, text, reason) == (full_tokens, full, "length")
    else:
        assert reason == "stop" and text == full[:later] and len(tokens) >= 12


def test_abort_frees_the_cache(model, tokenizer):
    engine = make_engine(model, tokenizer)
    engine.add_request("a", prompts(tokenizer)[2], SamplingParams(n=2, max_tokens=100, ignore_eos=True))
    for _ in range(3):
        engine.step()
    assert engine.cache.allocator.num_free < engine.cache.allocator.num_blocks
    deltas = engine.abort("a")
    assert [d.finish_reason for d in deltas] == ["abort", "abort"]
    assert not engine.has_work()
    assert engine.cache.allocator.num_free == engine.cache.allocator.num_blocks


def test_incremental_decoding_never_splits_a_character(tokenizer):
    text = "naïve café — 😀 ünïcödé ✓"
    ids = tokenizer.encode(text).ids
    assert len(ids) > len(text) // 2  # multi-byte characters span several byte-level tokens
    state, detok, pieces = TextState(), Detokenizer(tokenizer), []
    for i in range(1, len(ids) + 1):
        detok.append(state, ids[:i])
        pieces.append(Detokenizer.take(state, final=i == len(ids)))
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text


def test_streamed_text_never_shows_a_stop_string(tokenizer):
    ids = tokenizer.encode("alpha beta STOP gamma").ids
    state, detok, shown = TextState(stops=["STOP"]), Detokenizer(tokenizer), ""
    for i in range(1, len(ids) + 1):
        hit = detok.append(state, ids[:i])
        shown += Detokenizer.take(state, final=hit)
        if hit:
            break
    assert hit and shown == "alpha beta "


def test_prefix_caching_reuses_a_shared_prompt_start_and_answers_the_same(model, tokenizer):
    base = prompts(tokenizer)[2]  # ~40 tokens
    asks = [base + tokenizer.encode(s).ids for s in (" Again?", " Why?", " And the cat")]
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True, logprobs=0)
    plain = make_engine(model, tokenizer, block_size=4, prefix_caching=False)
    want = {i: run(plain, {"a": (p, params)})["a"][0] for i, p in enumerate(asks)}
    cached = make_engine(model, tokenizer, block_size=4)
    got = {}
    for i, p in enumerate(asks):  # one after another: later ones find the first one's blocks
        got[i] = run(cached, {"a": (p, params)})["a"][0]
    pool = cached.cache.allocator
    assert pool.hit_tokens >= 2 * (len(base) // 4) * 4  # the 2nd and 3rd skipped the shared blocks
    assert pool.query_tokens == sum(len(p) for p in asks)
    for i in want:
        assert got[i][0] == want[i][0]  # same tokens
        assert max(abs(a.logprob - b.logprob) for a, b in zip(got[i][2], want[i][2], strict=True)) < 1e-4
    assert plain.cache.allocator.hit_tokens == 0
    assert pool.num_free == pool.num_blocks  # cached blocks count as free


def test_prefix_cache_under_memory_pressure_evicts_and_stays_correct(model, tokenizer):
    ps = prompts(tokenizer)
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    alone = {i: run(make_engine(model, tokenizer, prefix_caching=False), {"a": (p, params)})["a"][0][0]
             for i, p in enumerate(ps)}
    engine = make_engine(model, tokenizer, block_size=4, kv_cache_tokens=160)  # tight: cached blocks get evicted
    for _ in range(2):
        out = run(engine, {f"r{i}": (p, params) for i, p in enumerate(ps * 2)})
        assert {i: out[f"r{i}"][0][0] for i in range(len(ps))} == alone
        assert {i: out[f"r{i + len(ps)}"][0][0] for i in range(len(ps))} == alone
    assert engine.cache.allocator.hit_tokens > 0 and engine.cache.allocator.evictions > 0
    assert engine.cache.allocator.num_free == engine.cache.allocator.num_blocks


def test_warm_up_leaves_no_trace(model, tokenizer):
    events = []

    class Spy:
        def __getattr__(self, name):
            return lambda *args: events.append(name)

    engine = LLMEngine(model, tokenizer, eos_ids={2}, cfg=EngineConfig(block_size=4, max_batched_tokens=64),
                       device=CPU, metrics=Spy())
    assert engine.warm_up() > 0
    pool = engine.cache.allocator
    assert events == [] and not engine.has_work()
    assert pool.num_free == pool.num_blocks and pool.num_cached_blocks == 0 and pool.query_tokens == 0
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    p = prompts(tokenizer)[1]
    assert run(engine, {"a": (p, params)})["a"][0][0] == run(make_engine(model, tokenizer), {"a": (p, params)})["a"][0][0]
    with pytest.raises(RuntimeError, match="before any request"):
        engine.add_request("b", p, params)
        engine.warm_up()


@pytest.mark.parametrize("kernels", KERNELS)
def test_decode_mirror_follows_joins_leaves_and_growth(model, tokenizer, kernels):
    """The decode mirror (mirror.py) is appended to while the batch stays the same and rebuilt
    when a sequence leaves, a new one is prefilled, or a row outgrows its headroom: tokens equal
    a cache-free forward throughout."""
    from tenacia.serve.engine.mirror import MIRROR_HEADROOM

    engine = make_engine(model, tokenizer, block_size=4, kv_cache_tokens=2048, decode_kernels=kernels)
    ps = prompts(tokenizer)
    lengths = [5, MIRROR_HEADROOM + 20, 30]  # the first leaves early; the second outgrows its row
    out: dict = {}
    for i, (p, n) in enumerate(zip(ps, lengths, strict=True)):
        engine.add_request(f"r{i}", p, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, logprobs=0))
        if i == 1:  # r2 joins while r0 and r1 decode
            for _ in range(8):
                for d in engine.step():
                    out.setdefault(d.request_id, []).extend(d.logprobs)
    decode_steps = 0
    while engine.has_work():
        decode_steps += 1
        for d in engine.step():
            out.setdefault(d.request_id, []).extend(d.logprobs)
    for i, (p, n) in enumerate(zip(ps, lengths, strict=True)):
        tokens, lps = reference_greedy(model, p, n)
        assert [lp.token_id for lp in out[f"r{i}"]] == tokens, i
        assert max(abs(a.logprob - b) for a, b in zip(out[f"r{i}"], lps, strict=True)) < 1e-4, i
    rebuilds = engine.attention.mirror.rebuilds
    assert 3 <= rebuilds <= decode_steps // 4, (rebuilds, decode_steps)


@pytest.mark.parametrize("kernels", KERNELS)
def test_a_prefills_last_layer_runs_its_mlp_on_the_sampled_rows_alone(model, tokenizer, kernels):
    """Every layer before the last runs every prompt row; the last runs its output product and
    MLP on each prompt's last row only (the others are never sampled), and the answers are a
    plain forward's (``test_paged_batched_chunked_matches_plain_forward``); a prompt being scored
    runs every row through every layer."""
    engine = make_engine(model, tokenizer, decode_kernels=kernels)
    layers = engine.runner.model.layers
    seen: dict[int, list[int]] = {0: [], len(layers) - 1: []}
    for i in seen:
        down = layers[i].down
        layers[i].down = lambda x, down=down, i=i: seen[i].append(x.size(0)) or down(x)
    ps = prompts(tokenizer)
    params = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    out = run(engine, {f"r{i}": (p, params) for i, p in enumerate(ps)})
    assert seen[0][0] == sum(len(p) for p in ps) and seen[len(layers) - 1][0] == len(ps)  # the prefill step
    assert all(out[f"r{i}"][0][0] == reference_greedy(model, p, 2)[0] for i, p in enumerate(ps))
    seen[0].clear()
    seen[len(layers) - 1].clear()
    run(engine, {"scored": (ps[1], SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))})
    assert seen[len(layers) - 1][0] == len(ps[1])
