"""The deepseek-v3 family against a dense Llama of the same size, side by side in one run.

Serving: ``moe-tiny`` (latent attention: a token caches one latent and one rotary key a layer)
against its GQA baseline, a Llama of the same layers, width and heads with 4 key/value heads
(the ``tiny`` preset). Both with random weights (what is measured does not depend on them),
float32, the real engine (``LLMEngine``). For each: the KV bytes per token the engine reports,
the cache a fixed KV budget buys, the sequences of ``--prompt`` + ``--new`` tokens that fit it at
once, and a run of exactly that many greedy requests (prefix caching off): how many ran
together at the peak, preemptions, output tokens/s. Goal: KV bytes per token at most a quarter
of the GQA model's. A third arm is ``moe-tiny`` with a narrower latent (``kv_lora_rank`` 48, the
widest that meets the goal), served the same way.

Training (``--train-steps`` > 0): ``moe-tiny`` against the dense ``tiny`` preset, which have
about equal active parameters: the same batches of the stdlib corpus, alternating step by step
(forward, backward, clip, AdamW; for moe-tiny its whole loss with MTP and balance, then the
bias update), one torch thread; median step time as tokens/s, then the main model's
next-token loss on held-out windows after equal tokens.

Expert computation (``--expert-tokens`` > 0): one MoE FFN of ``moe-tiny`` (its first MoE layer,
as initialised) against the dense FFN of its first layer (SwiGLU of width ``ffn_dim``), on the
same random tokens, alternating, forward and backward, one torch thread. Three arms: the dense
FFN; the expert computation (``MoE.experts_output``: the shared expert, the sort by expert, one
product per routed expert, the weighted scatter back; the routing computed once beforehand); the
whole MoE FFN (the router too). Each time is divided by the parameters a token passes through
(dense: ``3 dim ffn_dim``; experts: ``(top_k + shared) 3 dim expert_ffn_dim``, plus the router's
``E dim`` for the whole FFN). Goal: expert computation at most 1.5x the dense FFN's time per
active parameter.

    .venv/bin/python bench/moe.py      # prints a table, writes bench/results/moe-<time>.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

from tenacia import config  # noqa: E402
from tenacia.data.dataset import prepare_data  # noqa: E402
from tenacia.device import detect  # noqa: E402
from tenacia.model import build_model, loss_fn  # noqa: E402
from tenacia.serve.config import EngineConfig  # noqa: E402
from tenacia.serve.engine.kv_cache import CacheSpec  # noqa: E402
from tenacia.serve.engine.llm_engine import LLMEngine  # noqa: E402
from tenacia.serve.engine.sequence import SamplingParams  # noqa: E402
from tenacia.shape import ModelConfig  # noqa: E402
from tenacia.train.config import RunConfig  # noqa: E402
from tenacia.train.step import build_optimizer  # noqa: E402

CPU = torch.device("cpu")
# the third arm: moe-tiny with the widest latent that meets the goal (48 + 16 = 64 of GQA's 256)
ARMS = {"MLA (moe-tiny)": dict(preset="moe-tiny"), "GQA (tiny, 4 KV heads)": dict(preset="tiny"),
        "MLA (kv_lora_rank 48)": dict(preset="moe-tiny", mla=dict(kv_lora_rank=48))}


def serve_arm(cfg: ModelConfig, tokenizer, budget: int, prompt: int, new: int, block: int) -> dict:
    """One model at a KV budget of ``budget`` bytes (module docstring)."""
    per_token = cfg.n_layers * CacheSpec.of(cfg).elements_per_token * 4  # float32, as the engine will report
    blocks = budget // (per_token * block)
    per_seq = math.ceil((prompt + new) / block)
    fit = blocks // per_seq
    engine = LLMEngine(build_model(cfg).eval(), tokenizer, eos_ids=set(), device=CPU, cfg=EngineConfig(
        kv_cache_tokens=blocks * block, block_size=block, max_num_seqs=fit, max_batched_tokens=4096,
        prefix_caching=False))
    assert engine.kv_bytes_per_token == per_token
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(max_tokens=new, temperature=0.0, ignore_eos=True)
    for i in range(fit):
        engine.add_request(str(i), torch.randint(4, cfg.vocab_size, (prompt,), generator=gen).tolist(), params)
    peak, tokens, t0 = 0, 0, time.perf_counter()
    while engine.has_work():
        peak = max(peak, len(engine.scheduler.running))
        tokens += sum(len(d.token_ids) for d in engine.step())
    seconds = time.perf_counter() - t0
    return {"kv_bytes_per_token": engine.kv_bytes_per_token, "cache_tokens": engine.capacity_tokens,
            "fit": fit, "peak_running": peak, "preemptions": engine.scheduler.num_preemptions,
            "output_tokens": tokens, "seconds": seconds, "output_tokens_per_s": tokens / seconds,
            "active_params": cfg.num_active_params(), "params": cfg.num_params()}


def train_arms(steps: int, batch: int, seq_len: int, eval_batches: int) -> dict:
    """moe-tiny against tiny on the same batches, alternating (module docstring)."""
    run = config.load(RunConfig, None, ["model.preset=tiny", f"data.seq_len={seq_len}"])
    data = prepare_data(run.data, run.model.vocab_size)
    vocab = data.tokenizer.get_vocab_size()
    arms = {}
    for name, preset in (("dense (tiny)", "tiny"), ("MoE (moe-tiny)", "moe-tiny")):
        torch.manual_seed(0)
        cfg = ModelConfig(preset=preset, vocab_size=vocab)
        model = build_model(cfg).train()
        o = run.optim
        opt = build_optimizer(model, lr=o.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                              device=detect("cpu"))
        arms[name] = {"cfg": cfg, "model": model, "opt": opt, "times": []}
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train), generator=gen).tolist()
    for step in range(steps + 2):
        tokens = data.train.get(order[step * batch:(step + 1) * batch])
        for arm in arms.values():
            model, opt = arm["model"], arm["opt"]
            t0 = time.perf_counter()
            loss, _ = model.loss(tokens[:, :-1], tokens[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), run.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if arm["cfg"].is_moe:
                model.update_bias(model.expert_loads())
            loss.item()
            if step >= 2:  # two warm-up steps
                arm["times"].append(time.perf_counter() - t0)
    n = min(len(data.eval), eval_batches * batch)
    results = {}
    for name, arm in arms.items():
        model = arm["model"].eval()
        with torch.no_grad():
            losses = [loss_fn(model(w[:, :-1]), w[:, 1:]).item()
                      for w in (data.eval.get(list(range(i, min(i + batch, n)))) for i in range(0, n, batch))]
        step_s = statistics.median(arm["times"])
        results[name] = {"active_params": arm["cfg"].num_active_params(), "params": arm["cfg"].num_params(),
                         "step_s": step_s, "tokens_per_s": batch * seq_len / step_s,
                         "eval_loss": statistics.fmean(losses), "tokens": steps * batch * seq_len}
    return results


def expert_arms(tokens: int, reps: int) -> dict:
    """Dense FFN against moe-tiny's expert computation and whole MoE FFN (module docstring)."""
    torch.manual_seed(0)
    cfg = ModelConfig(preset="moe-tiny")
    model = build_model(cfg).train()
    moe, dense = model.moe_layers()[0], model.layers[0].feed_forward
    m = cfg.moe
    x = torch.randn(tokens, cfg.dim)
    with torch.no_grad():
        weights, indices, _ = moe.router(x)
    arms = {"dense FFN": (lambda h: dense(h), 3 * cfg.dim * cfg.ffn_dim),
            "MoE expert computation": (lambda h: moe.experts_output(h, weights, indices)[0],
                                       (m.top_k + m.n_shared_experts) * 3 * cfg.dim * m.expert_ffn_dim),
            "MoE FFN with the router": (lambda h: moe(h[None])[0],
                                        (m.top_k + m.n_shared_experts) * 3 * cfg.dim * m.expert_ffn_dim
                                        + m.n_routed_experts * cfg.dim)}
    times: dict[str, list[float]] = {name: [] for name in arms}
    for rep in range(reps + 2):
        for name, (fn, _) in arms.items():
            h = x.clone().requires_grad_()
            t0 = time.perf_counter()
            fn(h).sum().backward()
            if rep >= 2:  # two warm-ups
                times[name].append(time.perf_counter() - t0)
    dense_per = statistics.median(times["dense FFN"]) / arms["dense FFN"][1]
    results = {}
    for name, (_, active) in arms.items():
        t = statistics.median(times[name])
        results[name] = {"active_params": active, "seconds": t, "ns_per_active_param": t / active * 1e9,
                         "vs_dense": t / active / dense_per}
    results["loads"] = torch.bincount(indices.reshape(-1), minlength=m.n_routed_experts).tolist()
    return results


def serving_section(args: argparse.Namespace) -> dict:
    """The three serving arms at the KV budget, printed as a table."""
    from tenacia.data.tokenizer import train_bpe

    tokenizer = train_bpe([Path(argparse.__file__).read_text(), Path(json.__file__).read_text()], 512)
    budget = int(args.kv_budget_mib * 2**20)
    serving = {name: serve_arm(config.from_dict(ModelConfig, {**kw, "vocab_size": tokenizer.get_vocab_size()}),
                               tokenizer, budget, args.prompt, args.new, args.block_size) for name, kw in ARMS.items()}
    mla, gqa, _ = serving.values()
    ratio = mla["kv_bytes_per_token"] / gqa["kv_bytes_per_token"]
    print(f"serving, float32, KV budget {args.kv_budget_mib:g} MiB, sequences of {args.prompt} + {args.new} tokens")
    print(f"{'model':<24}{'KV B/token':>11}{'cache tokens':>14}{'fit':>6}{'peak':>6}{'preempt':>9}{'out tok/s':>11}")
    for name, r in serving.items():
        print(f"{name:<24}{r['kv_bytes_per_token']:>11,}{r['cache_tokens']:>14,}{r['fit']:>6}{r['peak_running']:>6}"
              f"{r['preemptions']:>9}{r['output_tokens_per_s']:>11,.0f}")
    print(f"KV bytes per token, moe-tiny's MLA / GQA: {ratio:.3f} (goal <= 0.25)")
    return {"serving": serving, "kv_ratio": ratio}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kv-budget-mib", type=float, default=8.0,
                   help="KV cache bytes each serving arm gets (0: no serving section)")
    p.add_argument("--prompt", type=int, default=96, help="prompt tokens per request")
    p.add_argument("--new", type=int, default=32, help="greedy tokens generated per request")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=60, help="measured training steps per arm (0: no training)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--expert-tokens", type=int, default=2048, help="tokens of the expert timing (0: none)")
    p.add_argument("--expert-reps", type=int, default=20, help="timed forward+backward passes per arm")
    p.add_argument("--out", default=None, help="results file (default: bench/results/moe-<time>.json)")
    args = p.parse_args()
    torch.set_num_threads(1)
    result: dict = {"args": vars(args)}
    if args.kv_budget_mib > 0:
        result.update(serving_section(args))
    if args.expert_tokens:
        experts = expert_arms(args.expert_tokens, args.expert_reps)
        print(f"\nexpert computation, {args.expert_tokens} tokens, forward + backward, median of "
              f"{args.expert_reps}, one thread (routed loads {experts['loads']})")
        print(f"{'arm':<26}{'active params':>14}{'time':>10}{'ns/param':>10}{'x dense':>9}")
        for name, r in experts.items():
            if name != "loads":
                print(f"{name:<26}{r['active_params']:>14,}{r['seconds'] * 1000:>8.1f}ms"
                      f"{r['ns_per_active_param']:>10.1f}{r['vs_dense']:>9.2f}")
        print(f"expert computation per active parameter / dense FFN's: "
              f"{experts['MoE expert computation']['vs_dense']:.2f} (goal <= 1.5)")
        result["experts"] = experts
    if args.train_steps:
        training = train_arms(args.train_steps, args.batch, args.seq_len, args.eval_batches)
        print(f"\ntraining, {args.train_steps} steps of {args.batch} x {args.seq_len} tokens, one thread")
        print(f"{'model':<18}{'active params':>14}{'params':>11}{'step':>10}{'tokens/s':>10}{'eval loss':>11}")
        for name, r in training.items():
            print(f"{name:<18}{r['active_params']:>14,}{r['params']:>11,}{r['step_s'] * 1000:>8.0f}ms"
                  f"{r['tokens_per_s']:>10,.0f}{r['eval_loss']:>11.3f}")
        result["training"] = training
    print(f"wrote {write_results('moe', result, Path(args.out) if args.out else None, indent=1)}")


if __name__ == "__main__":
    main()
