"""One torchft replica training the shared workload with torchft's low-communication sync:
``--algo localsgd`` (average the weights every H steps) or ``--algo diloco`` (an outer Nesterov
SGD step on the averaged pseudo-gradient every H steps; ``--fragments F > 1`` is its Streaming
DiLoCo, one fragment synced every H steps, as in tenacia's streaming).

Run by bench/slow_links.py from its own venv (bench/.venvs/torchft) with TORCHFT_LIGHTHOUSE set;
the replica hosts its own replica-group TCPStore on port 0 (on ``--host``, its address on the
emulated link). torchft advertises ``socket.gethostname()`` to its peers (its manager server, its
process group's store, its checkpoint server); in a lab namespace the machine's name resolves to
no lab address (here to 127.0.0.1, the node's own loopback), so the worker answers ``--host`` for
its host name and passes ``hostname=--host`` to ``Manager``, whose default for it is
``socket.gethostname()`` evaluated when torchft is imported, before any patch (the peers' healing
at the first quorum then dialled ``http://<machine name>:port``: refused, every round). torchft's quantized exchange (``should_quantize``) imports Triton, which a CPU
install of torch does not have: ``--quantize`` is refused here rather than silently dropped.
The inner step is the workload's AdamW; the outer optimizer is SGD(lr, momentum, nesterov), as
DiLoCo's paper and torchft's examples use.
"""

from __future__ import annotations

import argparse
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
from common import (
    Log,
    Workload,
    deadline_passed,
    die_with_parent,
    log_sigterm,
    main_guard,
    step_limit,
)
from torchft import Manager, ProcessGroupGloo
from torchft.local_sgd import DiLoCo, LocalSGD


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--replica", type=int, required=True)
    p.add_argument("--replicas", type=int, required=True)
    p.add_argument("--algo", choices=("localsgd", "diloco"), required=True)
    p.add_argument("--inner-steps", type=int, default=50, help="H: inner steps between syncs")
    p.add_argument("--fragments", type=int, default=1, help="diloco only: > 1 is Streaming DiLoCo")
    p.add_argument("--outer-lr", type=float, default=0.7)
    p.add_argument("--outer-momentum", type=float, default=0.9)
    p.add_argument("--quantize", action="store_true", help="torchft's fp8 exchange (needs Triton)")
    p.add_argument("--host", default="127.0.0.1", help="this replica's address on the link")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--timeout-s", type=float, default=60.0)
    p.add_argument("--eval-every", type=int, default=0, help="replica 0 logs worker_eval every N steps (0: at the end)")
    p.add_argument("--lr", type=float, help="the inner AdamW's (peak) rate (default: the workload's)")
    p.add_argument("--min-lr-ratio", type=float, help="$BENCH_WORKLOAD only: the schedule's floor (default: the file's)")
    args = p.parse_args()
    socket.gethostname = lambda: args.host  # module docstring: what torchft advertises to its peers
    if args.quantize:
        try:
            import torchft.collectives  # noqa: F401  (imports triton)
        except ImportError as e:
            raise SystemExit(f"torchft's quantized exchange is unavailable here: {e}") from None
    die_with_parent()
    log = Log(args.replica)
    log_sigterm(log)
    main_guard(log, lambda: train(args, log))


def fragments(model: torch.nn.Module, n: int) -> list[torch.nn.Module]:
    """The model's parameters cut into ``n`` fragments, each wrapped as one module (what torchft's
    Streaming DiLoCo wants): tenacia's rule (``tenacia.train.outer.split_fragments``, which this
    venv cannot import: it needs safetensors), i.e. the parameter tensors in model order (a tied
    weight once) in ``n`` contiguous, non-empty groups of about equal element counts, so that both
    streaming arms sync the same fragments. A fragment per top-level block would cut the micro
    preset into 3 and put its tied embedding in two fragments."""
    named = list(model.named_parameters())
    if n > len(named):
        raise SystemExit(f"--fragments {n} but the model has only {len(named)} parameter tensors")
    total, acc, groups = sum(p.numel() for _, p in named), 0, [[]]
    for i, (name, p) in enumerate(named):
        to_open = n - len(groups)
        if groups[-1] and to_open and (acc * n >= len(groups) * total or len(named) - i == to_open):
            groups.append([])
        groups[-1].append((name, p))
        acc += p.numel()
    out = []
    for group in groups:
        m = torch.nn.Module()
        for name, p in group:
            m.register_parameter(name.replace(".", "_"), p)
        out.append(m)
    return out


def train(args: argparse.Namespace, log: Log) -> None:
    w = Workload(args.preset, args.seq_len, args.batch, args.replicas, args.replica, args.lr, args.min_lr_ratio)
    log.write("worker_started", arm=f"torchft-{args.algo}")
    store = dist.TCPStore(args.host, 0, is_master=True, wait_for_workers=False)
    inner = w.optimizer(w.model.parameters())
    frags = fragments(w.model, args.fragments)
    # one outer optimizer per fragment: torchft steps a fragment's optimizer when it syncs, and an
    # optimizer over the whole model would also step the other fragments on their inner gradients
    outer = [torch.optim.SGD(f.parameters(), lr=args.outer_lr, momentum=args.outer_momentum, nesterov=True)
             for f in frags]

    def state_dict() -> dict:
        return {"model": w.model.state_dict(), "inner": inner.state_dict(), "outer": [o.state_dict() for o in outer]}

    def load_state_dict(sd: dict) -> None:
        w.model.load_state_dict(sd["model"])
        inner.load_state_dict(sd["inner"])
        for o, o_sd in zip(outer, sd["outer"], strict=True):
            o.load_state_dict(o_sd)

    timeout = timedelta(seconds=args.timeout_s)
    manager = Manager(
        pg=ProcessGroupGloo(timeout=timeout), min_replica_size=1, load_state_dict=load_state_dict,
        state_dict=state_dict, replica_id=f"bench_{args.replica}", store_addr=args.host, hostname=args.host,
        store_port=store.port, rank=0, world_size=1, lighthouse_addr=os.environ["TORCHFT_LIGHTHOUSE"],
        timeout=timeout, quorum_timeout=timedelta(seconds=120), use_async_quorum=False)
    if args.algo == "localsgd":
        sync = LocalSGD(manager, w.model, inner, sync_every=args.inner_steps)
    else:
        # torchft syncs every fragment once per ``sync_every`` steps, one every sync_every / F:
        # H * F makes it one fragment every H steps, as tenacia's streaming does (F = 1: DiLoCo)
        sync = DiLoCo(manager, frags, inner, outer, sync_every=args.inner_steps * len(frags),
                      should_quantize=args.quantize)
    limit = step_limit()
    step = 0
    with sync:
        while not deadline_passed() and (limit is None or step < limit):
            inner.zero_grad()
            loss = w.loss(w.model, step)
            loss.backward()
            w.prepare_step(inner, step)
            inner.step()  # torchft's hooks sync every H steps
            step += 1
            log.write("worker_step", step=step, committed=True, participants=manager.num_participants(),
                      tokens=w.tokens_per_step, loss=loss.item(), outer_step=manager.current_step())
            if args.eval_every and step % args.eval_every == 0 and args.replica == 0 and step != limit:
                log.write("worker_eval", step=step, eval_loss=w.eval_loss(w.model))
    if limit is not None and args.replica == 0:
        log.write("worker_eval", step=step, eval_loss=w.eval_loss(w.model))


if __name__ == "__main__":
    main()
