"""tenacia's single-process training step against a plain PyTorch loop, side by side.

Same model (tiny preset), same data windows, same batch, same AdamW and clipping, same threads.
The tenacia arm is ``Trainer.fit`` as ``tenacia train`` runs it (sampler, sample ledger, metrics,
kill-point checks); its step time is read between two logged steps, so start-up, the final eval
and the final checkpoint are left out. The arms alternate, ``--rounds`` times, and the median is
compared: the machine is shared and noisy, the ratio is what counts. Goal: overhead <= 3%.

    .venv/bin/python bench/train_overhead.py            # prints a table, writes bench/results/train_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenacia import config  # noqa: E402
from tenacia.data.dataset import prepare_data  # noqa: E402
from tenacia.device import detect  # noqa: E402
from tenacia.model.llama import Llama, loss_fn  # noqa: E402
from tenacia.run_config import RunConfig  # noqa: E402
from tenacia.train.step import build_optimizer  # noqa: E402
from tenacia.train.trainer import Trainer  # noqa: E402

WARMUP, MEASURED = 5, 20


def run_config(run_dir: str, threads: int, preset: str, seq_len: int, batch: int) -> RunConfig:
    return config.load(RunConfig, None, [
        f"model.preset={preset}", f"data.seq_len={seq_len}", f"train.batch_size={batch}",
        f"train.micro_batch_size={batch}", f"train.steps={WARMUP + MEASURED}", f"train.log_every={WARMUP}",
        "train.eval_every=0", "train.eval_batches=1", "checkpoint.every=0", "checkpoint.resume=false",
        "train.progress=false", f"train.threads={threads}", f'train.run_dir="{run_dir}"',
    ])


def tenacia_step_s(cfg: RunConfig) -> float:
    Trainer(cfg).fit()
    records = [json.loads(line) for line in (Path(cfg.train.run_dir) / "metrics.jsonl").read_text().splitlines()]
    t = {r["step"]: r["t"] for r in records if "loss" in r}
    return (t[WARMUP + MEASURED] - t[WARMUP]) / MEASURED


def plain_step_s(cfg: RunConfig) -> float:
    torch.set_num_threads(cfg.train.threads)
    data = prepare_data(cfg.data, cfg.model.vocab_size)
    dev = detect("cpu")
    torch.manual_seed(0)
    model = Llama(cfg.model)
    o = cfg.optim
    opt = build_optimizer(model, lr=o.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps, device=dev)
    B = cfg.train.batch_size
    times = []
    for step in range(WARMUP + MEASURED):
        t0 = time.perf_counter()
        batch = data.train.get(list(range(step * B, (step + 1) * B)))
        loss = loss_fn(model(batch[:, :-1]), batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - t0)
    return sum(times[WARMUP:]) / MEASURED


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="bench/results/train_overhead.json")
    args = p.parse_args()
    plain, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cfg = run_config(f"{tmp}/run{r}", args.threads, args.preset, args.seq_len, args.batch)
            plain.append(plain_step_s(cfg))
            ours.append(tenacia_step_s(cfg))
    tokens = args.batch * args.seq_len
    p_med, o_med = statistics.median(plain), statistics.median(ours)
    result = {
        "date": time.strftime("%Y-%m-%d"), "preset": args.preset, "seq_len": args.seq_len, "batch": args.batch,
        "threads": args.threads, "rounds": args.rounds, "plain_step_s": plain, "tenacia_step_s": ours,
        "plain_tokens_per_s": tokens / p_med, "tenacia_tokens_per_s": tokens / o_med,
        "overhead": o_med / p_med - 1,
    }
    print(f"{'arm':<10}{'step (median)':>16}{'tokens/s':>12}")
    print(f"{'plain':<10}{p_med * 1000:>13.1f} ms{tokens / p_med:>12,.0f}")
    print(f"{'tenacia':<10}{o_med * 1000:>13.1f} ms{tokens / o_med:>12,.0f}")
    print(f"overhead: {result['overhead'] * 100:+.1f}% (goal <= 3%)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
