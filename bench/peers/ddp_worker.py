"""One rank of plain torch DDP over gloo, started by torchrun, training the shared workload.

Two uses in bench/faults.py:
- the torchrun arm: ``torchrun --max-restarts N`` restarts the whole group when a worker dies;
  rank 0 saves a checkpoint (model, AdamW, step) every ``--checkpoint-every`` steps with an
  atomic rename, and every rank resumes from it on start.
- the baseline for step overhead: no faults, no checkpoints.
The process group keeps torch's default gloo timeout: a frozen worker stalls the others until
it is continued (the hang is waited out, not detected).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
from common import (
    Log,
    Workload,
    WrongNumbers,
    deadline_passed,
    die_with_parent,
    finite_state,
    log_sigterm,
    main_guard,
    step_limit,
)
from torch.nn.parallel import DistributedDataParallel


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--checkpoint-dir", default="")
    p.add_argument("--checkpoint-every", type=int, default=0)
    args = p.parse_args()
    die_with_parent()
    rank = int(os.environ["RANK"])
    log = Log(rank)
    log_sigterm(log)
    main_guard(log, lambda: train(args, rank, log))


def train(args: argparse.Namespace, rank: int, log: Log) -> None:
    world = int(os.environ["WORLD_SIZE"])
    w = Workload(args.preset, args.seq_len, args.batch, world, rank)
    log.write("worker_started", arm="ddp", restart=int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)))
    # torchrun's agent keeps one store across restarts; give each restart round its own key
    # prefix, or restarted gloo ranks read the dead round's addresses ("Connection refused").
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False,
                          wait_for_workers=False)
    dist.init_process_group("gloo", store=dist.PrefixStore(f"bench/round{restart}", store), rank=rank,
                            world_size=world)
    optim = w.optimizer(w.model.parameters())
    step = 0
    ckpt = Path(args.checkpoint_dir) / "last.pt" if args.checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        w.model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        step = int(state["step"])
        log.write("worker_resumed", step=step)
    wrong = WrongNumbers(w.model, rank, log)
    model = DistributedDataParallel(w.model)
    limit = step_limit()
    while not deadline_passed() and (limit is None or step < limit):
        wrong.step = step + 1
        optim.zero_grad()
        loss = w.loss(model, step)
        loss.backward()
        w.prepare_step(optim, step)
        optim.step()
        step += 1  # committed: DDP applies every step it finishes
        log.write("worker_step", step=step, committed=True, participants=world, tokens=w.tokens_per_step,
                  loss=loss.item())
        if ckpt is not None and args.checkpoint_every and step % args.checkpoint_every == 0 and rank == 0:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": w.model.state_dict(), "optim": optim.state_dict(), "step": step}, tmp)
            os.replace(tmp, ckpt)
    if limit is not None and rank == 0:
        log.write("worker_eval", step=step, eval_loss=w.eval_loss(w.model), finite_state=finite_state(w.model, optim))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
