"""Where diloco's eval-loss gap to ddp comes from: DiLoCo and ddp written out as one plain loop (issue 15).

    PYTHONPATH=. .venv/bin/python bench/diloco_gap.py --seed 1            # every variant, probe seed 1
    PYTHONPATH=. .venv/bin/python bench/diloco_gap.py --seed 1 --only ddp,h1

One process, one thread, the workload of bench/slow_links.py (micro model, 64-token samples, 4
members of 8 samples, the budget of 1,638,400 tokens: 800 ddp steps or 8 rounds of H = 100) on
loopback, deterministic: no speed-sized shares, no timing. Each variant changes one thing:

- ``ddp``: one model, AdamW on the mean gradient of the step's 32 samples (tenacia's ddp);
- ``h1``: four copies, each one AdamW step on its 8 samples, then the parameters averaged every
  step (diloco at H = 1, outer SGD lr 1, no momentum): averaging four AdamW updates;
- ``h1-noclip``: the same without gradient clipping (each copy clips its own 8-sample gradient);
  ``ddp-noclip``, ``h1-nc-noclip``: ddp and ``h1-nc`` without it;
- ``h1-shared-v``: the same, but every copy's AdamW divides by the second moment of the *mean*
  gradient (the moments' other half, the first moment, is linear: its average is ddp's): if this
  is ddp to rounding, the gap of ``h1`` is made of the per-copy second moments and clipping;
- ``h1-nc``, ``diloco-nc``: ``h1``, ``diloco`` with every member's inner AdamW fed the noise-corrected
  second moment (tenacia/train/second_moment.py: each 8-sample batch as two halves of 4, an unbiased
  per-coordinate estimate of the second moment of ddp's 32-sample mean gradient, no communication);
- ``diloco``: 8 rounds of H = 100, outer Nesterov (the bench's settings), each copy a contiguous
  quarter of the round's samples (tenacia with even shares);
- ``diloco-interleaved``: the same, but at inner step ``s`` copy ``k`` trains the samples of ddp's
  step ``s`` in slot ``k`` (torchft's assignment in bench/peers/common.py);
- ``torchft``: torchft's own DiLoCo (bench/slow_links_arms.py's ``torchft_run``: its venv, four
  workers in network namespaces at 0 ms, root needed) on this seed's workload and diloco's settings:
  what ``diloco-interleaved`` writes out, run by the peer.

- ``outer``: any strategy of bench/diloco_plain.py (H, outer step, fragments, the late ``mix`` or
  ``eager`` step, int8/int4/int2, top-k, error feedback, the compressed exchange's form
  (``--exchange all_gather|reduce_scatter``), the noise-corrected moment: the ``--h``,
  ``--outer-lr``, ... flags), with its payload bytes per token and both evaluations (as tenacia's
  run reports, and after a final exchange of what is still at rest) at every multiple of the budget.

``--scale K`` trains K times the budget: ddp as one run of that length (its cosine schedule over
it, evaluated at the end: ddp's reference at those tokens); ``outer`` evaluated at 1, 2, ... K
budgets along one run (its inner rate is constant after warmup, ``floor`` 1, so each point is what
a run of that budget gives).

The same ``compute_gradients``, ``apply_update``, ``lr_at``, ``build_optimizer`` and data as
tenacia; prints each variant's eval loss at the budget and writes them through results_file.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from diloco_plain import Spec, ddp_bytes_per_token, train  # noqa: E402
from results_file import write_results  # noqa: E402

from tenacia import config  # noqa: E402
from tenacia.train.config import RunConfig  # noqa: E402
from tenacia.train.outer import split_fragments  # noqa: E402
from tenacia.train.second_moment import build_noise_corrected, noise_corrected_update  # noqa: E402
from tenacia.train.step import apply_update, build_optimizer, compute_gradients, lr_at  # noqa: E402
from tenacia.train.trainer import Trainer  # noqa: E402

MEMBERS, BATCH, SEQ, TOKENS = 4, 8, 64, 1_638_400
SETTINGS = {  # bench/slow_links_settings.json's picks (probe seeds)
    "ddp": {"lr": 5e-3, "floor": 0.1},
    "diloco": {"lr": 2e-3, "floor": 1.0, "outer_lr": 0.7, "outer_momentum": 0.9, "H": 100},
}


def trainer(seed: int, run_dir: Path, lr: float, floor: float) -> Trainer:
    over = ["model.preset=micro", f"data.seq_len={SEQ}", "data.max_bytes=2000000", f"train.micro_batch_size={BATCH}",
            "train.progress=false", "device.threads=1", "checkpoint.every=0", "train.eval_batches=8",
            "optim.warmup_steps=10", f"train.seed={seed}", f"data.seed={seed}", f"optim.lr={lr:g}",
            f"optim.min_lr_ratio={floor:g}", f"train.run_dir={run_dir}"]
    return Trainer(config.load(RunConfig, overrides=over), write_ledger=False)


def shared_v_step(models, opts, lr: float, clip: float) -> None:
    """One AdamW step of every copy, each with its own first moment, all dividing by the second
    moment of the mean gradient (kept in the first copy's state)."""
    grads = [[p.grad for p in m.parameters()] for m in models]
    mean = [torch.stack(gs).mean(0) for gs in zip(*grads, strict=True)]
    if clip > 0:
        scale = min(1.0, clip / (float(torch.linalg.vector_norm(torch.stack([g.norm() for g in mean]))) + 1e-6))
        mean = [g * scale for g in mean]
        for gs in grads:
            for g in gs:
                g.mul_(scale)
    for m, opt in zip(models, opts, strict=True):
        for group in opt.param_groups:
            b1, b2, eps, wd = *group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                i = next(k for k, q in enumerate(m.parameters()) if q is p)
                st = opt.state.setdefault(p, {"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)})
                st["step"] += 1
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(mean[i], mean[i], value=1 - b2)
                mh = st["m"] / (1 - b1 ** st["step"])
                vh = st["v"] / (1 - b2 ** st["step"])
                with torch.no_grad():
                    p.mul_(1 - lr * wd)
                    p.addcdiv_(mh, vh.sqrt().add_(eps), value=-lr)
                p.grad = None


def torchft(seed: int, work: Path) -> float:
    """torchft's DiLoCo on the bench's workload with ``seed`` (module docstring)."""
    import argparse

    from slow_links_arms import tenacia_common, tenacia_steps, torchft_run
    from slow_links_workload import write_workload

    a = argparse.Namespace(replicas=MEMBERS, preset="micro", seq_len=SEQ, batch=BATCH, tokens=TOKENS,
                           inner_steps=SETTINGS["diloco"]["H"], fragments=1, eval_every=409_600, eval_batches=8,
                           timeout=1800, past=1.0, workload=work / f"workload-{seed}.pt")
    over = [*tenacia_common(a), f"train.seed={seed}", f"data.seed={seed}", "optim.lr=0.005", "optim.min_lr_ratio=0.1",
            *tenacia_steps("ddp", a)]
    write_workload(over, TOKENS // SEQ, a.workload)
    r = torchft_run("torchft-diloco", a, work / f"torchft-{seed}", 0, 100, None, None)
    if "error" in r:
        raise RuntimeError(r["error"])
    return r["eval_loss"]


def run(variant: str, seed: int, work: Path) -> float:
    if variant == "torchft":
        return torchft(seed, work)
    low = not variant.startswith("ddp")
    s = SETTINGS["diloco" if variant.startswith("diloco") else "ddp"]
    t = trainer(seed, work / variant, s["lr"], s["floor"])
    o, dev = t.cfg.optim, t.device
    clip = 0.0 if variant.endswith("-noclip") else o.grad_clip
    steps = SCALE * TOKENS // (MEMBERS * BATCH * SEQ)  # 800 a budget
    total = steps
    rate = lambda i: lr_at(i, lr=s["lr"], warmup_steps=o.warmup_steps, total_steps=total, min_lr_ratio=s["floor"])  # noqa: E731
    if not low:
        for i in range(1, steps + 1):
            ids = t.sampler.ids_at((i - 1) * MEMBERS * BATCH, MEMBERS * BATCH)
            compute_gradients(t.model, t.data.train.get(ids), BATCH, len(ids), dev)
            apply_update(t.model, t.optimizer, rate(i), clip)
        return t.evaluate()
    h = s.get("H", 1) if variant.startswith("diloco") else 1
    olr, mom = (s["outer_lr"], s["outer_momentum"]) if variant.startswith("diloco") else (1.0, 0.0)
    glob = [p.detach().clone() for p in t.model.parameters()]
    outer = torch.optim.SGD(glob, lr=olr, momentum=mom, nesterov=mom > 0)
    models = [copy.deepcopy(t.model) for _ in range(MEMBERS)]
    nc = "-nc" in variant
    if nc:
        opts = [build_noise_corrected(m, lr=s["lr"], weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                                      reference=MEMBERS * BATCH) for m in models]
        for opt in opts:
            opt.corrected_beta2 = CORRECTED_BETA2
    else:
        opts = [build_optimizer(m, lr=s["lr"], weight_decay=o.weight_decay, betas=(o.beta1, o.beta2), eps=o.eps,
                                device=dev) for m in models]
    for r in range(steps // h):
        round_ids = t.sampler.ids_at(r * h * MEMBERS * BATCH, h * MEMBERS * BATCH)
        for j in range(h):
            for k, m in enumerate(models):
                if variant == "diloco-interleaved":
                    chunk = round_ids[(j * MEMBERS + k) * BATCH:(j * MEMBERS + k + 1) * BATCH]
                else:  # contiguous quarters of the round, each cut into h inner batches
                    q = round_ids[k * h * BATCH:(k + 1) * h * BATCH]
                    chunk = q[j * BATCH:(j + 1) * BATCH]
                if nc:  # two halves (module docstring: noise-corrected second moment)
                    half = len(chunk) // 2
                    compute_gradients(m, t.data.train.get(chunk[:half]), BATCH, len(chunk), dev)
                    opts[k].mark_half(half, len(chunk))
                    compute_gradients(m, t.data.train.get(chunk[half:]), BATCH, len(chunk), dev)
                else:
                    compute_gradients(m, t.data.train.get(chunk), BATCH, len(chunk), dev)
            i = r * h + j + 1
            if nc:
                for m, opt in zip(models, opts, strict=True):
                    noise_corrected_update(m, opt, rate(i), clip)
            elif variant == "h1-shared-v":
                shared_v_step(models, opts, rate(i), clip)
            else:
                for m, opt in zip(models, opts, strict=True):
                    apply_update(m, opt, rate(i), clip)
        with torch.no_grad():
            for i, g in enumerate(glob):
                g.grad = torch.stack([g - list(m.parameters())[i] for m in models]).mean(0)
        outer.step()
        with torch.no_grad():
            for m in models:
                for p, g in zip(m.parameters(), glob, strict=True):
                    p.copy_(g)
    with torch.no_grad():
        for p, g in zip(t.model.parameters(), glob, strict=True):
            p.copy_(g)
    return t.evaluate()


def run_outer(spec: Spec, seed: int, work: Path) -> list[dict]:
    """The ``outer`` variant: rows at every budget (module docstring)."""
    t = trainer(seed, work / "outer", spec.lr, spec.floor)
    per_budget = TOKENS // (MEMBERS * BATCH * SEQ * spec.h)
    rows = train(t, spec, SCALE * per_budget, per_budget, CORRECTED_BETA2)
    n = sum(p.numel() for p in t.model.parameters())
    sizes = [sum(p.numel() for i, p in enumerate(t.model.parameters()) if i in ids)
             for ids in split_fragments([p.numel() for p in t.model.parameters()], spec.fragments)]
    per_round = [spec.bytes_per_round(s) for s in sizes]
    ddp = ddp_bytes_per_token(n, SEQ)
    for row in rows:
        r = row["round"]
        sent = sum(per_round[(i - 1) % spec.fragments] for i in range(1, r + 1))
        flush = sum(per_round)  # the final exchange of every fragment
        row["bytes_per_token"] = sent / row["tokens"]
        row["bytes_per_token_flushed"] = (sent + flush) / row["tokens"]
        row["fewer_bytes_than_ddp"] = ddp / row["bytes_per_token"]
        row["fewer_bytes_than_ddp_flushed"] = ddp / row["bytes_per_token_flushed"]
    return rows


CORRECTED_BETA2: float | None = None  # --corrected-beta2
SCALE = 1  # --scale
VARIANTS = ("ddp", "ddp-noclip", "h1", "h1-noclip", "h1-shared-v", "h1-nc", "h1-nc-noclip", "diloco", "diloco-nc",
            "diloco-interleaved", "torchft", "outer")


def main() -> None:
    global CORRECTED_BETA2, SCALE, TOKENS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1, help="a probe seed (never the bench's 0)")
    p.add_argument("--only", default="", help="comma-separated variants (default: all)")
    p.add_argument("--work", type=Path, default=Path("/tmp/diloco_gap"))
    p.add_argument("--diloco-lr", type=float, default=SETTINGS["diloco"]["lr"], help="the diloco variants' inner peak rate")
    p.add_argument("--corrected-beta2", type=float, default=None, help="the -nc variants' corrected EMA's decay")
    p.add_argument("--scale", type=int, default=1, help="train K budgets (module docstring)")
    p.add_argument("--tokens", type=int, default=TOKENS, help="the budget (a smaller one for a quick check)")
    d = Spec()
    p.add_argument("--h", type=int, default=d.h, help="outer: inner steps per round")
    p.add_argument("--floor", type=float, default=d.floor,
                   help="outer: the inner schedule's floor (below 1 only the last budget's row is a run of that budget)")
    p.add_argument("--outer-lr", type=float, default=d.outer_lr)
    p.add_argument("--outer-momentum", type=float, default=d.momentum)
    p.add_argument("--fragments", type=int, default=d.fragments)
    p.add_argument("--late", default=d.late, help="outer: none, mix or eager")
    p.add_argument("--mix", type=float, default=d.mix)
    p.add_argument("--own", type=float, default=d.own, help="outer, eager: the own progress' weight in the stand-in")
    p.add_argument("--quantize", default=d.quantize, help="outer: fp32, int8, int4 or int2")
    p.add_argument("--exchange", default=d.exchange, help="outer, compressed: all_gather or reduce_scatter")
    p.add_argument("--sum-feedback", action="store_true",
                   help="outer, reduce_scatter: fold the sums' errors into their owners' residuals (tenacia drops them)")
    p.add_argument("--topk", type=float, default=d.topk)
    p.add_argument("--block", type=int, default=d.block)
    p.add_argument("--no-error-feedback", action="store_true")
    p.add_argument("--nc", action="store_true", help="outer: the noise-corrected inner second moment")
    p.add_argument("--delay", type=int, default=d.delay, help="outer: the delayed outer step's inner steps (tau)")
    a = p.parse_args()
    SETTINGS["diloco"]["lr"] = a.diloco_lr
    CORRECTED_BETA2, SCALE, TOKENS = a.corrected_beta2, a.scale, a.tokens
    torch.set_num_threads(1)
    rows = []
    for v in [x for x in (a.only.split(",") if a.only else VARIANTS) if x]:
        t0 = time.monotonic()
        if v == "outer":
            spec = Spec(h=a.h, lr=a.diloco_lr, floor=a.floor, outer_lr=a.outer_lr, momentum=a.outer_momentum, fragments=a.fragments,
                        late=a.late, mix=a.mix, own=a.own, quantize=a.quantize, topk=a.topk, block=a.block,
                        error_feedback=not a.no_error_feedback, exchange=a.exchange,
                        sum_feedback=a.sum_feedback, nc=a.nc, delay=a.delay)
            for r in run_outer(spec, a.seed, a.work):
                rows.append({"variant": v, "seed": a.seed, "spec": asdict(spec), "scale": SCALE, **r,
                             "eval_loss": r["eval"], "seconds": time.monotonic() - t0})
                print(f"outer seed {a.seed} round {r['round']} tokens {r['tokens']}: eval {r['eval']:.4f} flushed "
                      f"{r['eval_flushed']:.4f} {r['fewer_bytes_than_ddp']:.0f}x ({r['fewer_bytes_than_ddp_flushed']:.0f}x "
                      f"flushed) fewer bytes than ddp ({time.monotonic() - t0:.0f} s)", flush=True)
            continue
        loss = run(v, a.seed, a.work)
        rows.append({"variant": v, "seed": a.seed, "scale": SCALE, "tokens": SCALE * TOKENS, "diloco_lr": a.diloco_lr,
                     "corrected_beta2": a.corrected_beta2, "eval_loss": loss, "seconds": time.monotonic() - t0})
        print(f"{v:<20} seed {a.seed}: eval loss {loss:.4f} ({time.monotonic() - t0:.0f} s)", flush=True)
    ddp = next((r["eval_loss"] for r in rows if r["variant"] == "ddp"), None)
    if ddp:
        for r in rows:
            print(f"{r['variant']:<20} {r['eval_loss']:.4f} {100 * (r['eval_loss'] / ddp - 1):+.1f}% vs ddp")
    write_results(f"diloco_gap-seed{a.seed}", {"rows": rows})


if __name__ == "__main__":
    main()
