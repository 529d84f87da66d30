"""tenacia's single-process training step against a plain PyTorch loop, side by side.

Same model shape (tiny preset), same data windows, same batch, same AdamW and clipping, one
process, one thread. The two arms alternate step by step, so that both see the same noise from a
shared machine. The tenacia arm is ``Trainer.step_once``, the step ``tenacia train`` runs (sampler,
micro-batching, the sample ledger record, kill-point checks; the metrics line every
``log_every`` steps is not included); the plain arm is forward, backward, clip, AdamW and
zero_grad on the same batches.
Medians of per-step wall time are compared: the ratio is what counts. Goal: overhead <= 3%.

    .venv/bin/python bench/train_overhead.py    # prints a table, writes bench/results/train_overhead.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

from tenacia import config  # noqa: E402
from tenacia.device import detect  # noqa: E402
from tenacia.model.llama import Llama, loss_fn  # noqa: E402
from tenacia.train.config import RunConfig  # noqa: E402
from tenacia.train.step import build_optimizer  # noqa: E402
from tenacia.train.trainer import Trainer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="measured steps per arm (after 3 warm-up steps)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default=None, help="results file (default: bench/results/train-overhead-<time>.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(RunConfig, None, [
            f"model.preset={args.preset}", f"data.seq_len={args.seq_len}", f"train.batch_size={args.batch}",
            f"train.micro_batch_size={args.batch}", f"train.steps={args.steps + 3}", "train.progress=false",
            f"device.threads={args.threads}", f'train.run_dir="{tmp}/run"', "checkpoint.resume=false"])
        trainer = Trainer(cfg)
        torch.manual_seed(0)
        model = Llama(cfg.model)
        o = cfg.optim
        opt = build_optimizer(model, lr=o.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                              device=detect("cpu"))
        train = trainer.data.train
        plain, ours = [], []
        for step in range(args.steps + 3):
            t0 = time.perf_counter()
            trainer.step_once()
            t1 = time.perf_counter()
            batch = train.get(trainer.sampler.ids_at(step * args.batch, args.batch))
            loss = loss_fn(model(batch[:, :-1]), batch[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()
            t2 = time.perf_counter()
            if step >= 3:
                ours.append(t1 - t0)
                plain.append(t2 - t1)
    tokens = args.batch * args.seq_len
    p_med, o_med = statistics.median(plain), statistics.median(ours)
    result = {"preset": args.preset, "seq_len": args.seq_len,
              "batch": args.batch, "threads": args.threads, "steps": args.steps,
              "plain_step_s": plain, "tenacia_step_s": ours, "plain_tokens_per_s": tokens / p_med,
              "tenacia_tokens_per_s": tokens / o_med, "overhead": o_med / p_med - 1}
    print(f"{'arm':<10}{'step (median)':>16}{'tokens/s':>12}")
    print(f"{'plain':<10}{p_med * 1000:>13.1f} ms{tokens / p_med:>12,.0f}")
    print(f"{'tenacia':<10}{o_med * 1000:>13.1f} ms{tokens / o_med:>12,.0f}")
    print(f"overhead: {result['overhead'] * 100:+.1f}% (goal <= 3%)")
    print(f"wrote {write_results('train-overhead', result, Path(args.out) if args.out else None, indent=1)}")


if __name__ == "__main__":
    main()
