"""The engine on a tiny random deepseek-v3 model: the absorbed latent attention against the plain
MLA forward, a cache that holds only latents and rotary keys, greedy tokens equal to the model's
own under continuous batching, chunked prefill and prefix caching.

Routing is discontinuous (``tests/model/deepseek_tiny.py``): every comparison of tokens checks
that the reference forward chose its experts with a margin of at least 1e-5 (the tie rule:
equal scores go to the lower index, ``moe.route``; no test depends on it, as no choice here is
within 1e-5 of a tie)."""

from __future__ import annotations

import pytest
import torch

from tenacia.serve.config import EngineConfig
from tenacia.serve.engine.attention import PagedAttention, PrefillLayout
from tenacia.serve.engine.backend import TorchBackend
from tenacia.serve.engine.kv_cache import CacheSpec, PagedKVCache
from tenacia.serve.engine.llm_engine import LLMEngine
from tenacia.serve.engine.mirror import DecodeLayout
from tenacia.serve.engine.packed_deepseek import PackedMLA
from tenacia.serve.engine.sequence import SamplingParams
from tests.model.deepseek_tiny import routing_margin, tiny_config, tiny_model

from .tiny import one_thread  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
QUERY_PATHS = pytest.mark.parametrize("q_lora_rank", [0, 32], ids=["plain-q", "low-rank-q"])


@QUERY_PATHS
def test_absorbed_attention_equals_the_plain_mla_forward(q_lora_rank):
    """Two sequences of 12 tokens: the first 7 prefilled packed in one row, the other 5 decoded
    one step at a time, each step attending over the cached latents alone."""
    cfg = tiny_config(q_lora_rank)
    model = tiny_model(cfg)
    mla, a = model.layers[1].attention, cfg.mla
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, cfg.dim, generator=gen)
    cos, sin = model.rope_cos[:12], model.rope_sin[:12]
    with torch.inference_mode():
        want = mla(x, cos[None, None], sin[None, None])  # (2, 12, dim): the plain form
        cache = PagedKVCache(n_layers=cfg.n_layers, spec=CacheSpec.of(cfg), num_blocks=6, block_size=4,
                             dtype=torch.float32, device=CPU)
        attention, packed = PagedAttention(cache, TorchBackend()), PackedMLA(mla, 1, TorchBackend())
        tables = [[0, 1, 2], [3, 4, 5]]

        def slot(b: int, p: int) -> int:
            return tables[b][p // 4] * 4 + p % 4

        slots = torch.tensor([slot(b, p) for b in range(2) for p in range(7)])
        attention.begin_prefill(PrefillLayout(slots, [7, 7], [0, 0], [None, None]))
        positions = torch.arange(7).repeat(2)
        got = packed(x[:, :7].reshape(14, -1), cos[positions], sin[positions], attention, decode=False)
        assert (got.view(2, 7, -1) - want[:, :7]).abs().max().item() < 1e-5
        for p in range(7, 12):
            attention.begin_decode(DecodeLayout(torch.tensor([slot(0, p), slot(1, p)]), (0, 1), [p + 1, p + 1],
                                                tables))
            got = packed(x[:, p], cos[[p, p]], sin[[p, p]], attention, decode=True)
            assert (got - want[:, p]).abs().max().item() < 1e-5, p
        # what the cache holds for a token: [kv_norm(latent), rope(k_rope)], nothing per head
        latent, k_rope = mla.wkv_a(x[1, 9]).split([a.kv_lora_rank, a.qk_rope_head_dim])
        rotated = torch.cat([-k_rope[a.qk_rope_head_dim // 2:], k_rope[:a.qk_rope_head_dim // 2]])
        entry = torch.cat([mla.kv_norm(latent), k_rope * cos[9] + rotated * sin[9]])
    assert cache.v is None and cache.k.shape == (cfg.n_layers, 24, 1, a.kv_lora_rank + a.qk_rope_head_dim)
    assert (cache.k[1, slot(1, 9), 0] - entry).abs().max().item() < 1e-6


def greedy(model, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """n tokens of greedy decoding with the model's own full forward, and their logprobs, after
    checking that no routing choice along the way is a near-tie."""
    ids, logprobs = torch.tensor([prompt]), []
    with torch.inference_mode():
        for _ in range(n):
            last = model(ids)[0, -1].log_softmax(-1)
            ids = torch.cat([ids, last.argmax().view(1, 1)], dim=1)
            logprobs.append(last.max().item())
    assert routing_margin(model, ids) > 1e-5
    return ids[0, len(prompt):].tolist(), logprobs


def run(engine: LLMEngine, requests: dict[str, list[int]], n: int) -> dict[str, tuple[list[int], list[float]]]:
    """Greedy tokens and their logprobs from the engine, all requests together."""
    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, logprobs=0)
    for rid, prompt in requests.items():
        engine.add_request(rid, prompt, params)
    out: dict[str, tuple[list[int], list[float]]] = {rid: ([], []) for rid in requests}
    while engine.has_work():
        for d in engine.step():
            out[d.request_id][0].extend(d.token_ids)
            out[d.request_id][1].extend(lp.logprob for lp in d.logprobs)
    return out


def assert_equal(got: dict, want: dict) -> None:
    """Equal tokens, logprobs within 1e-5."""
    assert {rid: tokens for rid, (tokens, _) in got.items()} == {rid: want[rid][0] for rid in got}
    for rid, (_, logprobs) in got.items():
        assert max(abs(a - b) for a, b in zip(logprobs, want[rid][1], strict=True)) < 1e-5, rid


@QUERY_PATHS
def test_served_greedy_tokens_equal_the_model_batched_chunked_and_from_the_prefix_cache(q_lora_rank, tokenizer):
    model = tiny_model(tiny_config(q_lora_rank), seed=1)  # seed 2 has a near-tie (5e-7) on "r2"
    gen = torch.Generator().manual_seed(3)
    prompts = {f"r{i}": torch.randint(4, 256, (n,), generator=gen).tolist() for i, n in enumerate((21, 35, 9))}
    want = {rid: greedy(model, p, 12) for rid, p in prompts.items()}
    # 16 tokens a step: the longer prompts are prefilled in chunks over their earlier chunks'
    # latents while the others decode beside them
    engine = LLMEngine(model, tokenizer, eos_ids=set(), device=CPU,
                       cfg=EngineConfig(kv_cache_tokens=512, block_size=8, max_batched_tokens=16))
    assert_equal(run(engine, prompts, 12), want)
    pool = engine.cache.allocator
    hits = pool.hit_tokens
    assert_equal(run(engine, {"r1": prompts["r1"]}, 12), want)
    assert pool.hit_tokens - hits == 32  # the prompt's 4 full blocks came from the cache


def test_kv_bytes_per_token_are_the_latent_and_the_rotary_key_of_every_layer(tokenizer):
    cfg = tiny_config()
    a = cfg.mla
    for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
        engine = LLMEngine(tiny_model(cfg).to(dtype), tokenizer, eos_ids=set(), device=CPU,
                           cfg=EngineConfig(kv_cache_tokens=256))
        assert engine.kv_bytes_per_token == cfg.n_layers * (a.kv_lora_rank + a.qk_rope_head_dim) * size
        assert engine.cache.k.numel() * size == engine.kv_bytes_per_token * engine.capacity_tokens
        assert engine.cache.v is None


def test_a_moe_run_directory_is_served_from_its_checkpoint(tmp_path, tokenizer):
    """``tenacia serve RUN_DIR`` of a deepseek-v3 run: its newest checkpoint, balancing biases
    included, served with the latent cache, greedy tokens equal to the model's."""
    from tenacia import config
    from tenacia.checkpoint.format import write_snapshot
    from tenacia.checkpoint.state import Snapshot, model_tensors
    from tenacia.serve.models import load_model
    from tests.train.moe_run import run_config

    cfg = run_config(tmp_path, 1)  # the run directory tmp_path / "run" of a small moe-tiny
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(config.dumps_toml(cfg))
    tokenizer.save(str(run_dir / "tokenizer.json"))
    model = tiny_model(cfg.model, seed=1)
    write_snapshot(run_dir / "checkpoints", Snapshot(5, {"model.safetensors": model_tensors(model)}, {"step": 5}))
    served = load_model(str(run_dir), CPU, torch.float32)
    assert torch.equal(served.model.expert_biases(), model.expert_biases())
    engine = LLMEngine(served.model, served.tokenizer, eos_ids=set(), device=CPU,
                       cfg=EngineConfig(kv_cache_tokens=256, block_size=8))
    a = cfg.model.mla
    assert engine.kv_bytes_per_token == cfg.model.n_layers * (a.kv_lora_rank + a.qk_rope_head_dim) * 4
    prompt = tokenizer.encode("def main(argv):").ids
    assert_equal(run(engine, {"p": prompt}, 10), {"p": greedy(model, prompt, 10)})
