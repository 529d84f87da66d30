"""The diloco strategy against an independent DiLoCo written out as a plain loop (issue 15).

The reference holds R copies of the model, each with its own AdamW; round ``r`` takes the
sampler's next ``H x batch`` samples, gives copy ``k`` the ``k``-th contiguous quarter (even
shares) and trains it as H inner steps of contiguous, equal inner batches at the run's schedule
over ``H x rounds`` inner steps (warmup, cosine, floor); then the outer Nesterov SGD steps the
global parameters with the mean of ``global - local`` and every copy restarts from them. What it
shares with tenacia: the model, the data order, ``compute_gradients``/``apply_update``/``lr_at``;
not the round's bookkeeping (``LocalRound``, ``OuterRounds``, the token-weighted reduce), which
is what these tests check: the inner-rate index, the warmup, the reset to the global parameters,
the inner moments kept across rounds, the disjoint shares, the outer step's sign, scale and
momentum. Two cases: one replica at H = 1 with a plain outer step (lr 1, no momentum) is plain
training; four replicas at H = 3 over a cosine with Nesterov momentum follow the reference.
"""

from __future__ import annotations

import copy

import torch

from tenacia.data.sampler import shard
from tenacia.train.second_moment import build_noise_corrected, noise_corrected_update
from tenacia.train.step import apply_update, build_optimizer, compute_gradients, lr_at, train_step
from tenacia.train.trainer import Trainer

from .outer_harness import load, train


def reference(cfg, rounds: int, replicas: int) -> list[torch.Tensor]:
    """The global parameters after ``rounds`` rounds of the loop the module docstring describes
    (with ``replicas.outer.inner_second_moment = "noise_corrected"``: each inner batch as two halves,
    the first ``len // 2`` samples then the rest, into ``second_moment.NoiseCorrectedAdamW``)."""
    corrected = cfg.replicas.outer.inner_second_moment == "noise_corrected"
    t = Trainer(cfg, write_ledger=False)
    o, h, b = cfg.optim, cfg.replicas.outer.inner_steps, cfg.train.batch_size
    total = o.schedule_steps(cfg.train.steps) * h
    glob = [p.detach().clone() for p in t.model.parameters()]
    outer = torch.optim.SGD(glob, lr=cfg.replicas.outer.lr, momentum=cfg.replicas.outer.momentum,
                            nesterov=cfg.replicas.outer.momentum > 0)
    models = [copy.deepcopy(t.model) for _ in range(replicas)]
    opts = [build_noise_corrected(m, lr=o.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                                  reference=b) if corrected else
            build_optimizer(m, lr=o.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                            device=t.device) for m in models]
    for r in range(1, rounds + 1):
        ids = t.sampler.ids_at((r - 1) * h * b, h * b)
        for k, (m, opt) in enumerate(zip(models, opts, strict=True)):
            share = shard(range(h * b), k, replicas)
            for j in range(h):
                chunk = [ids[q] for q in shard(share, j, h)]
                rate = lr_at((r - 1) * h + j + 1, lr=o.lr, warmup_steps=o.warmup_steps, total_steps=total,
                             min_lr_ratio=o.min_lr_ratio)
                if corrected:
                    half, mbs = len(chunk) // 2, cfg.train.micro_batch_size
                    compute_gradients(m, t.data.train.get(chunk[:half]), mbs, len(chunk), t.device)
                    opt.mark_half(half, len(chunk))
                    compute_gradients(m, t.data.train.get(chunk[half:]), mbs, len(chunk), t.device)
                    noise_corrected_update(m, opt, rate, o.grad_clip)
                else:
                    compute_gradients(m, t.data.train.get(chunk), cfg.train.micro_batch_size, len(chunk), t.device)
                    apply_update(m, opt, rate, o.grad_clip)
        with torch.no_grad():
            for i, g in enumerate(glob):
                g.grad = torch.stack([g - list(m.parameters())[i] for m in models]).mean(0)
        outer.step()
        with torch.no_grad():
            for m in models:
                for p, g in zip(m.parameters(), glob, strict=True):
                    p.copy_(g)
    return glob


def test_one_replica_at_h1_with_a_plain_outer_step_is_plain_training(tmp_path):
    """global - 1 x (global - local) is the local step: the diloco run is a plain run (to rounding)."""
    steps = ["train.steps=6", "optim.warmup_steps=2", "optim.min_lr_ratio=0.1"]
    trainers, _, _ = train(tmp_path / "diloco", 1, *steps, "replicas.sync=diloco", "replicas.outer.inner_steps=1",
                           "replicas.outer.lr=1", "replicas.outer.momentum=0")
    cfg = load(tmp_path / "plain", *steps)
    plain = Trainer(cfg, write_ledger=False)
    o = cfg.optim
    for step in range(1, 7):
        ids = plain.sampler.ids_at((step - 1) * cfg.train.batch_size, cfg.train.batch_size)
        train_step(plain.model, plain.optimizer, plain.data.train.get(ids), step=step, grad_clip=o.grad_clip,
                   lr=lr_at(step, lr=o.lr, warmup_steps=o.warmup_steps, total_steps=6, min_lr_ratio=o.min_lr_ratio),
                   micro_batch_size=cfg.train.micro_batch_size, device=plain.device)
    for p, q in zip(trainers[0].model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert abs(trainers[0].evaluate() - plain.evaluate()) < 1e-5


def test_four_replicas_over_a_cosine_with_nesterov_follow_the_reference(tmp_path):
    over = ["train.steps=4", "optim.warmup_steps=2", "optim.min_lr_ratio=0.1", "replicas.sync=diloco",
            "replicas.outer.inner_steps=3", "replicas.outer.lr=0.7", "replicas.outer.momentum=0.9"]
    trainers, syncs, _ = train(tmp_path / "diloco", 4, *over)
    expected = reference(load(tmp_path / "ref", *over), rounds=4, replicas=4)
    start = Trainer(load(tmp_path / "start", *over), write_ledger=False)
    moved = [(g - s).abs().max() for g, s in zip(expected, start.model.parameters(), strict=True)]
    assert max(moved) > 1e-2  # the runs trained: a comparison of untouched weights would prove nothing
    for t in trainers:
        for p, g in zip(t.model.parameters(), expected, strict=True):
            torch.testing.assert_close(p, g, rtol=1e-4, atol=1e-6)
    for g, e in zip(syncs[0].outer.params, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_noise_corrected_members_follow_the_reference_with_halves(tmp_path):
    """``replicas.outer.inner_second_moment = "noise_corrected"`` on the real path (LocalRound's
    halves, the trainer's optimizer) is the reference loop with the same optimizer, and differs
    from the members' own second moment."""
    over = ["train.steps=3", "optim.warmup_steps=2", "optim.min_lr_ratio=0.1", "replicas.sync=diloco",
            "replicas.outer.inner_steps=2", "replicas.outer.lr=0.7", "replicas.outer.momentum=0.9"]
    corrected = [*over, "replicas.outer.inner_second_moment=noise_corrected"]
    trainers, syncs, _ = train(tmp_path / "diloco", 4, *corrected)
    expected = reference(load(tmp_path / "ref", *corrected), rounds=3, replicas=4)
    own = reference(load(tmp_path / "own", *over), rounds=3, replicas=4)
    assert max(float((g - e).abs().max()) for g, e in zip(own, expected, strict=True)) > 1e-4
    for g, e in zip(syncs[0].outer.params, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    assert {"exp_avg_sq_own"} <= set(next(iter(trainers[0].optimizer.state.values())))


def test_one_eager_replica_starts_each_round_where_synchronous_diloco_does(tmp_path):
    """Eager (streaming, one fragment, overlap): alone, a member's own progress is the average, so
    the outer step it makes early is the real one: after N rounds its eager start for round N + 1
    is synchronous diloco's global parameters after N (the whole trajectory, momentum included), and
    its global parameters, one round late, are diloco's after N - 1."""
    common = ["optim.warmup_steps=2", "optim.min_lr_ratio=0.1", "optim.decay_steps=5", "replicas.outer.inner_steps=2",
              "replicas.outer.lr=0.7", "replicas.outer.momentum=0.9"]
    eager_t, eager_s, _ = train(tmp_path / "eager", 1, *common, "train.steps=5", "replicas.sync=streaming",
                                "replicas.outer.fragments=1", "replicas.outer.eager=true")
    sync_t, sync_s, _ = train(tmp_path / "sync", 1, *common, "train.steps=5", "replicas.sync=diloco")
    before, _, _ = train(tmp_path / "before", 1, *common, "train.steps=4", "replicas.sync=diloco")
    start = [p.detach().clone() for p in eager_t[0].model.parameters()]
    with torch.no_grad():
        eager_s[0].eager_start(6, start)
    moved = max(float((a - b.detach()).abs().max()) for a, b in zip(start, before[0].model.parameters(), strict=True))
    assert moved > 1e-3  # round 5 moved the weights: the comparison below is not of a standing model
    for a, b in zip(start, sync_s[0].outer.params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(eager_s[0].outer.params, before[0].model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def eager_reference(cfg, rounds: int, replicas: int, error_feedback: bool = True) -> tuple[list, list]:
    """The eager outer step with a compressed exchange, written out (``replicas/diloco.py``'s module
    docstring): member ``k`` at rest holds ``global - p_k`` (``p_k``: its own progress of its last
    round, not yet averaged); round ``r`` sends ``p_k + e_k`` compressed (``e_k``: its error-feedback
    residual, the new one what the payload did not carry), starts its inner steps at
    ``global - lr (p_k + mu (mu m + p_k))`` (Nesterov with ``p_k`` for the average), and once the
    round is trained the average of the decoded payloads steps the global parameters (Nesterov on
    ``m``); its new progress is its start less where it ended. Round 1 sends nothing (no step).
    Returns (each member's parameters at rest, the global parameters)."""
    from tenacia.train.replicas.compress import Compressor

    t = Trainer(cfg, write_ledger=False)
    o, oc, h, b = cfg.optim, cfg.replicas.outer, cfg.replicas.outer.inner_steps, cfg.train.batch_size
    comp = Compressor(oc.quantize, oc.block, oc.topk, error_feedback)
    total = o.schedule_steps(cfg.train.steps) * h
    glob = [p.detach().clone() for p in t.model.parameters()]
    momentum: list[torch.Tensor] | None = None
    models = [copy.deepcopy(t.model) for _ in range(replicas)]
    opts = [build_optimizer(m, lr=o.lr, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                            device=t.device) for m in models]
    progress = [[torch.zeros_like(g) for g in glob] for _ in range(replicas)]
    residual: list[torch.Tensor | None] = [None] * replicas
    tokens = h * (b // replicas) * cfg.data.seq_len
    for r in range(1, rounds + 1):
        acc = torch.zeros(sum(g.numel() for g in glob))
        for k in range(replicas):
            payload, res = comp.encode(torch.cat([p.reshape(-1) for p in progress[k]]), residual[k])
            if r > 1:  # round 1 sends zeros with no weight
                acc.add_(comp.decode(payload), alpha=tokens)
                residual[k] = res
        ids = t.sampler.ids_at((r - 1) * h * b, h * b)
        starts = []
        for k, (m, opt) in enumerate(zip(models, opts, strict=True)):
            with torch.no_grad():
                for p, g, d, i in zip(m.parameters(), glob, progress[k], range(len(glob)), strict=True):
                    buf = d if momentum is None else momentum[i] * oc.momentum + d
                    p.copy_(g - oc.lr * (d + oc.momentum * buf))
            starts.append([p.detach().clone() for p in m.parameters()])
            share = shard(range(h * b), k, replicas)
            for j in range(h):
                chunk = [ids[q] for q in shard(share, j, h)]
                rate = lr_at((r - 1) * h + j + 1, lr=o.lr, warmup_steps=o.warmup_steps, total_steps=total,
                             min_lr_ratio=o.min_lr_ratio)
                compute_gradients(m, t.data.train.get(chunk), cfg.train.micro_batch_size, len(chunk), t.device)
                apply_update(m, opt, rate, o.grad_clip)
        if r > 1:
            avg = (acc / (tokens * replicas)).split([g.numel() for g in glob])
            with torch.no_grad():
                bufs = [d.view_as(g).clone() if momentum is None else momentum[i] * oc.momentum + d.view_as(g)
                        for i, (g, d) in enumerate(zip(glob, avg, strict=True))]
                momentum = bufs
                for g, d, m_ in zip(glob, avg, bufs, strict=True):
                    g.sub_(oc.lr * (d.view_as(g) + oc.momentum * m_))
        for k, m in enumerate(models):
            progress[k] = [s - p.detach() for s, p in zip(starts[k], m.parameters(), strict=True)]
    rest = [[g - d for g, d in zip(glob, progress[k], strict=True)] for k in range(replicas)]
    return rest, glob


def test_four_eager_replicas_with_int4_topk_and_error_feedback_follow_the_reference(tmp_path):
    """The eager step with a compressed exchange on the real path (``OuterRounds``: ``sent``,
    ``eager_start``, the reduce with its residuals kept on commit, ``_landed``) is the written-out
    loop above: the right base for the late step, and the residual carried from round to round
    (without it the reference lands elsewhere)."""
    over = ["train.steps=4", "optim.warmup_steps=2", "optim.min_lr_ratio=1", "replicas.sync=streaming",
            "replicas.outer.fragments=1", "replicas.outer.eager=true", "replicas.outer.inner_steps=2",
            "replicas.outer.lr=0.7", "replicas.outer.momentum=0.9", "replicas.outer.quantize=int4",
            "replicas.outer.topk=0.05"]
    trainers, syncs, _ = train(tmp_path / "eager", 4, *over)
    rest, glob = eager_reference(load(tmp_path / "ref", *over), rounds=4, replicas=4)
    _, glob_no_ef = eager_reference(load(tmp_path / "ref-no-ef", *over), rounds=4, replicas=4, error_feedback=False)
    assert max(float((a - b).abs().max()) for a, b in zip(glob, glob_no_ef, strict=True)) > 1e-4
    for g, e in zip(syncs[0].outer.params, glob, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    for t, mine in zip(trainers, rest, strict=True):
        for p, e in zip(t.model.parameters(), mine, strict=True):
            torch.testing.assert_close(p, e, rtol=1e-4, atol=1e-6)
