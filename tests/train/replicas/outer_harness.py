"""Replicas of a sync strategy in one process, for tests: R trainers, each with its own strategy,
the strategy's real compute, contribution, reduce and apply, over a process group stand-in whose
collectives meet at a barrier (one thread per member) and sum or gather in rank order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import torch

from tenacia import config
from tenacia.train.config import RunConfig
from tenacia.train.replicas.apply import PendingStep
from tenacia.train.replicas.overlap import InFlight
from tenacia.train.replicas.protocol import Vote
from tenacia.train.replicas.shares import even_shares
from tenacia.train.replicas.sync import strategy
from tenacia.train.trainer import Trainer

from ...integration.procs import SMALL


class Ready:
    """A group builder whose group is built already."""

    def __init__(self, pg) -> None:
        self.pg, self.error, self.done = pg, None, threading.Event()
        self.done.set()


class Done:
    """A completed collective."""

    def __init__(self) -> None:
        self.future = torch.futures.Future()
        self.future.set_result(None)

    def get_future(self):
        return self.future

    def wait(self) -> None:
        pass


class Group:
    """The collectives of ``size`` members running in threads; ``member(rank)`` is one's view."""

    def __init__(self, size: int):
        self.n, self.barrier, self.slots = size, threading.Barrier(size), [None] * size
        self.sent_bytes = 0

    def member(self, rank: int) -> Member:
        return Member(self, rank)


class Member:
    def __init__(self, group: Group, rank: int):
        self.group, self.index = group, rank

    def size(self) -> int:
        return self.group.n

    def rank(self) -> int:
        return self.index

    def _meet(self, t):
        """Every member's ``t`` (a tensor, or a list of them), by rank."""
        g = self.group
        g.slots[self.index] = [p.clone() for p in t] if isinstance(t, list) else t.clone()
        g.barrier.wait()
        got = list(g.slots)
        g.barrier.wait()
        return got

    def allreduce(self, tensors):
        got = self._meet(tensors[0])
        total = got[0].clone()
        for t in got[1:]:
            total += t
        tensors[0].copy_(total)
        self.group.sent_bytes += tensors[0].numel() * tensors[0].element_size()
        return Done()

    def allgather(self, outputs, inputs):
        for out, t in zip(outputs[0], self._meet(inputs[0]), strict=True):
            out.copy_(t)
        self.group.sent_bytes += inputs[0].numel()
        return Done()

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes):
        got = self._meet(list(input.split(input_split_sizes)))
        for out, parts in zip(output.split(output_split_sizes), got, strict=True):
            out.copy_(parts[self.index])
        self.group.sent_bytes += input.numel() - input_split_sizes[self.index]  # its own part stays here
        return Done()


def load(run_dir: Path, *overrides: str) -> RunConfig:
    return config.load(RunConfig, overrides=[*SMALL, "train.progress=false", f"train.run_dir={run_dir}", *overrides])


def train(run_dir: Path, replicas: int, *overrides: str,
          after_commit: Callable[[list[Trainer]], None] | None = None,
          voted: Callable[..., None] | None = None, resume: bool = False) -> tuple[list[Trainer], list, Group]:
    """Train ``replicas`` in-process members to ``train.steps`` with the strategy the overrides
    name; returns the trainers, their strategies and the group (bytes each member sent).
    ``after_commit(trainers)`` runs after every member applied a step, as ``Replica.after_commit``;
    ``voted(step, trainers, syncs, locals, pendings)`` after every member reduced, before the
    commit (where a member speculates, ``Replica.speculate``). ``resume``: each member first loads
    its newest checkpoint, and the run goes on from the step it holds."""
    cfgs = [load(run_dir / f"r{r}", *overrides) for r in range(replicas)]
    trainers = [Trainer(c, source=f"replica:{r}", write_ledger=False) for r, c in enumerate(cfgs)]
    if resume:
        assert all(t.resume() for t in trainers) and len({t.step for t in trainers}) == 1
    syncs = [strategy(c, t) for c, t in zip(cfgs, trainers, strict=True)]
    locals_ = [s.local(t) for s, t in zip(syncs, trainers, strict=True)]
    group, cfg = Group(replicas), cfgs[0]
    members = [group.member(r) for r in range(replicas)]
    for step in range(trainers[0].step + 1, cfg.train.steps + 1):
        t0 = trainers[0]
        start, batch = t0.sampler.position, t0.sampler.peek(cfg.step_samples)
        shares = even_shares(range(replicas), cfg.step_samples)
        reduced: list[torch.Tensor] = [torch.empty(0)] * replicas
        tokens = [0] * replicas

        def run(r: int, step: int, positions: tuple[int, ...], batch: list[int], tokens: list[int],
                reduced: list[torch.Tensor]) -> None:
            t, s, held = trainers[r], syncs[r], locals_[r]
            flight = None
            if s.overlaps:  # as Replica.begin_overlap: sent from the state at rest, reduced beside the compute
                flight = InFlight(s.sent(t, step, True), step, lambda f, pg: s.reduce(f, pg, lambda d: None, lambda *_: None, step),
                                  Ready(members[r]), lambda *_: None)
            _, tokens[r], _ = held.compute(step, positions, batch, t.data.train.get, cfg.train.micro_batch_size,
                                           t.device, sharers=replicas)
            if flight is None:
                flat = s.contribution(t, held, step)
                s.reduce(flat, members[r], lambda done: None, lambda *_: None, step)
            else:
                flight.done.wait()
                assert flight.error is None, flight.error
                flat = flight.flat
            reduced[r] = flat

        threads = [threading.Thread(target=run, args=(r, step, shares[r], batch, tokens, reduced))
                   for r in range(replicas)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        pendings = [PendingStep(Vote(replica=r, quorum_id=1, step=step, ok=True, start=start, batch=tuple(batch),
                                     tokens=tokens[r]), reduced[r]) for r in range(replicas)]
        if voted is not None:
            voted(step, trainers, syncs, locals_, pendings)
        for r in range(replicas):
            syncs[r].apply(trainers[r], locals_[r], pendings[r], cfg)
        if after_commit is not None:
            after_commit(trainers)
    return trainers, syncs, group
