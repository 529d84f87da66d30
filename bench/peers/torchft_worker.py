"""One torchft replica (its Manager with DDP over gloo) training the shared workload.

Run by bench/faults.py from its own venv (bench/.venvs/torchft) with TORCHFT_LIGHTHOUSE set; the
replica hosts its own replica-group TCPStore on port 0. Settings follow the torchft figures in
shared/FACTS.md: gloo timeout 5 s (the Manager's ``timeout``), the lighthouse's heartbeat
timeout 3 s (set on the lighthouse by the bench).
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

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
from torchft import DistributedDataParallel, Manager, ProcessGroupGloo


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--replica", type=int, required=True)
    p.add_argument("--replicas", type=int, required=True)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--timeout-s", type=float, default=5.0)
    args = p.parse_args()
    die_with_parent()
    log = Log(args.replica)
    log_sigterm(log)
    main_guard(log, lambda: train(args, log))


def train(args: argparse.Namespace, log: Log) -> None:
    w = Workload(args.preset, args.seq_len, args.batch, args.replicas, args.replica)
    log.write("worker_started", arm="torchft")
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    optim = None

    def state_dict() -> dict:
        return {"model": w.model.state_dict(), "optim": optim.state_dict()}

    def load_state_dict(sd: dict) -> None:
        w.model.load_state_dict(sd["model"])
        optim.load_state_dict(sd["optim"])

    timeout = timedelta(seconds=args.timeout_s)
    manager = Manager(
        pg=ProcessGroupGloo(timeout=timeout), min_replica_size=1, load_state_dict=load_state_dict,
        state_dict=state_dict, replica_id=f"bench_{args.replica}", store_addr="127.0.0.1",
        store_port=store.port, rank=0, world_size=1, lighthouse_addr=os.environ["TORCHFT_LIGHTHOUSE"],
        timeout=timeout, quorum_timeout=timedelta(seconds=60))
    wrong = WrongNumbers(w.model, args.replica, log)
    model = DistributedDataParallel(manager, w.model)
    optim = w.optimizer(w.model.parameters())
    limit = step_limit()
    step = 0
    while not deadline_passed() and (limit is None or step < limit):
        optim.zero_grad()
        manager.start_quorum()
        step = manager.current_step()
        wrong.step = step + 1
        loss = w.loss(model, step)
        loss.backward()
        committed = manager.should_commit()
        if committed:
            optim.step()
        # Read the step after should_commit: a healing replica gets its peer's step during the
        # quorum, and a committed step has advanced the counter.
        step = manager.current_step() if committed else manager.current_step() + 1
        log.write("worker_step", step=step, committed=committed, participants=manager.num_participants(),
                  tokens=w.tokens_per_step, loss=loss.item())
    if limit is not None and args.replica == 0:
        log.write("worker_eval", step=step, eval_loss=w.eval_loss(w.model), finite_state=finite_state(w.model, optim))


if __name__ == "__main__":
    main()
