"""Streaming's overlap (``replicas/overlap.py``, ``OuterRounds.sent``, ``Replica.begin_overlap``):
the round's exchange is sent before its inner steps and is in flight while they run, on a clock
that counts forward passes, not seconds; the late outer step is mixed into the local fragment by
hand-computed numbers; ``trained_tokens`` weighs the next exchange and rides in checkpoints, not
in heals."""

import threading
from types import SimpleNamespace

import pytest
import torch

from tenacia import hooks
from tenacia.train.outer import OWN_TOKENS
from tenacia.train.replicas.apply import PendingStep
from tenacia.train.replicas.protocol import Vote
from tenacia.train.replicas.reducing import ReducePhase
from tenacia.train.replicas.sync import strategy
from tenacia.train.trainer import Trainer

from .outer_harness import Ready, load


class DelayedLink:
    """A one-member group whose exchange arrives only after ``after`` forward passes ran since it
    was sent: the link's clock is the inner steps' forward passes (the ``activations`` tamper site,
    one per micro-batch), so nothing here depends on how fast this machine is."""

    def __init__(self, events: list[str], after: int):
        self.events, self.after, self.passes = events, after, None
        self.arrived: torch.futures.Future = torch.futures.Future()
        self.sent = threading.Event()

    def size(self) -> int:
        return 1

    def tick(self, site: str, step: int, value):
        if site == "activations":
            self.events.append("forward")
            if self.passes is not None:
                self.passes += 1
                if self.passes == self.after:
                    self.events.append("arrived")
                    self.arrived.set_result(None)
        return value

    def allreduce(self, tensors):
        self.events.append("sent")
        self.passes = 0
        self.sent.set()
        return self

    def get_future(self):
        return self.arrived

    def wait(self) -> None:
        self.arrived.wait()


@pytest.mark.parametrize("fragments", [2, 1])  # 1: diloco's whole exchange beside the next round
def test_the_exchange_is_in_flight_while_the_inner_steps_run_and_the_late_step_mixes(tmp_path, fragments):
    cfg = load(tmp_path, "replicas.sync=streaming", f"replicas.outer.fragments={fragments}", "replicas.outer.inner_steps=4",
               "replicas.outer.lr=0.5", "replicas.outer.momentum=0.9")
    t = Trainer(cfg, write_ledger=False)
    sync = strategy(cfg, t)
    held, outer = sync.local(t), t.outer
    assert sync.overlaps and sync.mix == 0.5
    frag = outer.fragments[0]  # round 1 syncs fragment 0
    with torch.no_grad():  # the state at rest: fragment 0 moved +0.25 from the global parameters
        for i, p in enumerate(t.model.parameters()):
            if i in frag:
                p.add_(0.25)
    outer.trained_tokens = 100  # what this member trained in its last committed round
    rest = [p.detach().clone() for p in t.model.parameters()]
    glob = [g.clone() for g in outer.params]

    events: list[str] = []
    forwards = cfg.step_samples // cfg.train.micro_batch_size  # 32 samples, micro-batches of 4: 8 passes
    link = DelayedLink(events, after=forwards)
    me = SimpleNamespace(id=0, sync=sync, trainer=t, wake=lambda *_: None)
    q = SimpleNamespace(step=1, sharers=(0,), heal={})
    stop = hooks.tamper_with(link.tick)
    try:
        flight = ReducePhase.begin_overlap(me, q, Ready(link), check=False)
        # the exchange is sent from the overlap's own thread: wait for it, or under load the first
        # forward passes could run before it starts and the link's clock would never reach `after`
        assert link.sent.wait(60)
        batch = t.sampler.peek(cfg.step_samples)
        _, tokens, _ = held.compute(1, range(len(batch)), batch, t.data.train.get, cfg.train.micro_batch_size,
                                    t.device, sharers=1)
        events.append("computed")
        assert flight.done.wait(60) and flight.error is None, flight.error
    finally:
        stop()
    # sent before the first inner step; it could arrive only because every pass ran while it was in flight
    assert events == ["sent", *["forward"] * forwards, "arrived", "computed"]

    # what was sent: [t d, t] of fragment 0 from the state at rest, d = global - rest (-0.25, rounded)
    d = torch.cat([(glob[i] - rest[i]).reshape(-1) for i in frag])
    assert torch.equal(flight.flat, torch.cat([d * 100, torch.tensor([100.0])]))
    torch.testing.assert_close(flight.flat[:-1], torch.full_like(d, -25.0))

    local = [v.clone() for v in held.local]
    vote = Vote(replica=0, quorum_id=1, step=1, ok=True, start=0, batch=tuple(batch), tokens=tokens)
    sync.apply(t, held, PendingStep(vote, flight.flat), cfg)
    # the outer step with avg -0.25: b = -0.25, g -= 0.5 (-0.25 + 0.9 b) = g + 0.2375
    for i, p in enumerate(t.model.parameters()):
        if i in frag:
            torch.testing.assert_close(outer.params[i], glob[i] + 0.2375)
            # the local fragment: 0.5 x what the round trained + 0.5 x the new global
            torch.testing.assert_close(p, 0.5 * local[i] + 0.5 * (glob[i] + 0.2375))
            assert not torch.equal(local[i], rest[i])
        else:  # the other fragment keeps the round's local parameters; its global ones did not move
            assert torch.equal(p, local[i]) and torch.equal(outer.params[i], glob[i])
    assert outer.trained_tokens == tokens  # the weight of this member's next exchange


def test_a_healing_member_sends_zeros_and_trained_tokens_ride_in_checkpoints_not_heals(tmp_path):
    cfg = load(tmp_path / "run", "replicas.sync=streaming", "replicas.outer.fragments=2",
               "checkpoint.background=false")
    t = Trainer(cfg, write_ledger=False)
    sync = strategy(cfg, t)
    with torch.no_grad():
        for p in t.model.parameters():
            p.add_(1.0)
    t.outer.trained_tokens = 4096
    assert not sync.sent(t, 1, sharing=False).any()  # a newcomer healing in the round weighs nothing
    assert sync.sent(t, 1, sharing=True)[-1] == 4096
    t.step = 1
    t.save_checkpoint()
    again = Trainer(cfg, write_ledger=False)
    assert again.resume() and again.outer.trained_tokens == 4096
    assert torch.equal(strategy(cfg, again).sent(again, 2, True), sync.sent(t, 2, True))  # a resumed round: same bits
    healed = Trainer(load(tmp_path / "healed", "replicas.sync=streaming", "replicas.outer.fragments=2"),
                     write_ledger=False)
    healed.outer.trained_tokens = 7
    healed.outer.load(t.outer.tensors())  # what a donor sends: no trained_tokens
    assert OWN_TOKENS not in t.outer.tensors() and healed.outer.trained_tokens == 0


def test_overlap_is_streamings_only_and_can_be_turned_off(tmp_path):
    assert not strategy(load(tmp_path, "replicas.sync=diloco"), Trainer(load(tmp_path, "replicas.sync=diloco"),
                                                                        write_ledger=False)).overlaps
    off = load(tmp_path, "replicas.sync=streaming", "replicas.outer.fragments=2", "replicas.outer.overlap=false")
    assert not strategy(off, Trainer(off, write_ledger=False)).overlaps


def test_the_wait_for_the_group_is_not_timed_as_the_all_reduce(tmp_path):
    """The leader's stuck-collective rule times the ``allreduce`` phase only: a group still being
    built (a mesh opening over a 100 ms link) must be waited for before that phase is entered,
    as a blocking reduce does (a real run at 100 ms looped on 'all-reduce stuck' without it)."""
    seen: list[str] = []
    builder, flight = Ready(None), SimpleNamespace(done=threading.Event(), error=None)
    builder.done.clear()

    def wait_until(done, what: str) -> None:
        seen.append(f"wait {what}")
        (builder.done if what == "process group" else flight.done).set()  # what arrives while it waits
        assert done()

    me = SimpleNamespace(pending_step=3, wait_until=wait_until, enter=lambda phase, step: seen.append(phase))
    assert ReducePhase.reduce_in_flight(me, flight, builder, None)
    assert seen == ["wait process group", "allreduce", "wait all-reduce"]
