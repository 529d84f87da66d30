"""The probe that picks each strategy's inner learning rate and outer step for bench/slow_links.py.

    .venv/bin/python bench/slow_links_tune.py                  # every candidate; loopback, no link
    .venv/bin/python bench/slow_links_tune.py --only ddp       # one strategy's (prints, writes nothing)
    .venv/bin/python bench/slow_links_tune.py --levers         # the loss levers too (not selected from)

DiLoCo's papers tune the inner learning rate per setting; a diloco round trains 8-sample inner
batches where ddp trains 32, so one rate does not suit both. This runs each candidate of
``CANDIDATES`` as bench/slow_links.py runs its arm (``tenacia_run``: the same model, budget, H and
evals) but on other seeds than the bench's 0 (``train.seed=s``, ``data.seed=s``: another
initialization and sample order), on loopback (the loss does not depend on the link), and
prints each one's eval loss at the budget.

The rule, nothing read from the bench's own runs: per strategy, the candidate with the lowest
mean eval loss over the strategy's ``SELECTION_SEEDS`` (a candidate counts only once it ran on
all of them), written to ``bench/slow_links_settings.json`` (``slow_links_settings.use_settings`` reads it)
before the bench runs. ddp's rate sets every arm's target, so it is chosen on three seeds: on one
(seed 1) 5e-3 beat 3e-3 by 3%, on the bench's seed 0 it lost by 5% (docs/benchmarks.md).
diloco-int8 and streaming (fp32) take diloco's and streaming-int4's, diloco-overlap diloco's
until it has probes of its own; torchft's LocalSGD (a plain
average of the weights) the best diloco candidate with a plain-average outer step (lr 1, no
momentum).

``LEVERS`` (``--levers``) are the loss levers of issue 15 tried on the probe seeds and recorded in
docs/benchmarks.md, but never selected from: another H changes the bytes, ``extra`` overrides
change the arm itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "peers")]

from results_file import write_results  # noqa: E402
from slow_links_arms import TWINS, tenacia_run  # noqa: E402
from slow_links_settings import SETTINGS_FILE  # noqa: E402

SELECTION_SEEDS = {"ddp": (1, 2, 3)}  # every other strategy: (1,)
H = 100  # bench/slow_links.py's --inner-steps


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One setting of a strategy: inner peak rate, the floor of its schedule (1: a constant rate),
    the outer step (lr, Nesterov momentum; None for ddp), H, and overrides that change the arm."""

    arm: str
    lr: float
    floor: float
    outer_lr: float | None = None
    outer_momentum: float | None = None
    inner_steps: int = H
    extra: tuple[str, ...] = ()

    def overrides(self, seed: int) -> list[str]:
        out = [f"train.seed={seed}", f"data.seed={seed}", f"optim.lr={self.lr:g}", f"optim.min_lr_ratio={self.floor:g}"]
        if self.outer_lr is not None:
            out += [f"replicas.outer.lr={self.outer_lr:g}", f"replicas.outer.momentum={self.outer_momentum:g}"]
        return [*out, *self.extra]

    def selectable(self) -> bool:
        return self.inner_steps == H and not self.extra


CANDIDATES = [
    # 8e-3 (2.694) and 5e-3 constant (2.636) lost to 5e-3 cosine (2.550) and 3e-3 cosine (2.631)
    # on seed 1 (16:17-16:24) and were not run on seeds 2 and 3
    *[Candidate(arm="ddp", lr=lr, floor=0.1) for lr in (3e-3, 4e-3, 5e-3)],
    *[Candidate(arm="diloco", lr=lr, floor=floor, outer_lr=olr, outer_momentum=mom)
      for lr, floor in ((1e-3, 0.1), (1e-3, 1.0), (2e-3, 1.0), (3e-3, 0.1), (3e-3, 1.0), (5e-3, 1.0))
      for olr, mom in ((0.7, 0.9), (1.0, 0.0))],
    *[Candidate(arm="diloco-int4-topk", lr=lr, floor=1.0, outer_lr=1.0, outer_momentum=0.0) for lr in (1e-3, 3e-3, 5e-3)],
    # a coordinate sent by one member of four moves by a quarter of its pseudo-gradient (the others
    # count as zeros in the token-weighted average): outer rates above 1 make up for it
    *[Candidate(arm="diloco-int4-topk", lr=3e-3, floor=1.0, outer_lr=olr, outer_momentum=0.0) for olr in (2.0, 4.0)],
    *[Candidate(arm="streaming-int4", lr=lr, floor=1.0, outer_lr=0.7, outer_momentum=0.9) for lr in (2e-3, 3e-3, 5e-3)],
    # each fragment is synced twice in 8 rounds of 4 fragments: momentum has little to build on
    *[Candidate(arm="streaming-int4", lr=2e-3, floor=1.0, outer_lr=olr, outer_momentum=mom)
      for olr, mom in ((1.0, 0.0), (0.5, 0.9))],
    # the eager outer step (diloco's exchange beside the next round, its own progress the average's stand-in)
    *[Candidate(arm="diloco-eager", lr=lr, floor=1.0, outer_lr=olr, outer_momentum=mom)
      for lr in (2e-3, 3e-3) for olr, mom in ((0.7, 0.9), (1.0, 0.0))],
]
LEVERS = [
    # fewer, larger rounds cost bytes: the frontier of loss against bytes for fp32 diloco
    *[Candidate(arm="diloco", lr=2e-3, floor=1.0, outer_lr=0.7, outer_momentum=0.9, inner_steps=h) for h in (50, 25)],
    # the exchange overlapped with the next round, its step one round late (streaming with one fragment)
    Candidate(arm="diloco-overlap", lr=2e-3, floor=1.0, outer_lr=0.7, outer_momentum=0.9),
    # twice the top-k payload (31 bytes a block of 256 against 16), within 1,000x once the votes are packed
    Candidate(arm="diloco-int4-topk", lr=3e-3, floor=1.0, outer_lr=1.0, outer_momentum=0.0,
              extra=("replicas.outer.topk=0.07",)),
]


def rows_of(doc: dict | list) -> list[dict]:
    """A probe file's rows (written by results_file; a bare list before 2026-12-04)."""
    return doc["rows"] if isinstance(doc, dict) else doc


def key(c: Candidate | dict) -> tuple:
    d = asdict(c) if isinstance(c, Candidate) else c
    return (d["arm"], d["lr"], d.get("floor", d.get("min_lr_ratio")), d["outer_lr"], d["outer_momentum"],
            d.get("inner_steps", H), tuple(d.get("extra", ())))


def select(rows: list[dict]) -> dict[str, dict]:
    """Per strategy, the selectable candidate with the lowest mean eval loss over its selection
    seeds, among those that ran on all of them (module docstring); its ``mean`` and ``losses``."""
    by: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r["eval_loss"] is not None and r.get("inner_steps", H) == H and not r.get("extra"):
            by.setdefault(key(r), {})[r.get("seed", 1)] = r["eval_loss"]
    best: dict[str, dict] = {}
    for k, losses in by.items():
        seeds = SELECTION_SEEDS.get(k[0], (1,))
        if not all(s in losses for s in seeds):
            continue
        mean = statistics.mean(losses[s] for s in seeds)
        if k[0] not in best or mean < best[k[0]]["mean"]:
            best[k[0]] = {"lr": k[1], "min_lr_ratio": k[2], "outer_lr": k[3], "outer_momentum": k[4], "mean": mean,
                          "losses": {s: losses[s] for s in seeds}}
    plain = [(k, v) for k, v in by.items() if k[0] == "diloco" and k[3] == 1.0 and k[4] == 0.0 and 1 in v]
    if plain:
        k, v = min(plain, key=lambda kv: kv[1][1])
        best["localsgd"] = {"lr": k[1], "min_lr_ratio": k[2], "outer_lr": 1.0, "outer_momentum": 0.0, "mean": v[1],
                            "losses": {1: v[1]}}
    for arm, twin in (("diloco-int8", "diloco"), ("diloco-int2-rs", "diloco"), ("streaming", "streaming-int4"),
                      ("diloco-overlap", "diloco"), ("diloco-eager", "diloco"), ("streaming-int4-eager", "streaming-int4"),
                      *TWINS.items()):
        if twin in best and arm not in best:
            best[arm] = best[twin]
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated arms to probe (default: all); writes no settings")
    p.add_argument("--levers", action="store_true", help="run LEVERS too")
    p.add_argument("--resume", type=Path, action="append", default=[],
                   help="a probe's JSON (repeatable): its candidates are taken as run, not run again")
    a = p.parse_args()
    # bench/slow_links.py's defaults
    a.replicas, a.preset, a.seq_len, a.batch, a.tokens, a.inner_steps = 4, "micro", 64, 8, 1_638_400, H
    a.fragments, a.topk, a.eval_every, a.eval_batches, a.timeout, a.past = 4, 0.03, 409_600, 8, 900, 1.0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"slow_links_tune-{stamp}"
    rows = [r for f in a.resume for r in rows_of(json.loads(f.read_text()))]
    done = {(key(r), r.get("seed", 1)) for r in rows if r["eval_loss"] is not None}
    only = [x for x in a.only.split(",") if x]
    todo = [(c, s) for c in [*CANDIDATES, *(LEVERS if a.levers else [])]
            for s in (SELECTION_SEEDS.get(c.arm, (1,)) if c.selectable() else (1,))
            if (not only or c.arm in only) and (key(c), s) not in done]
    for i, (c, seed) in enumerate(todo):
        run_args = copy.copy(a)
        run_args.inner_steps = c.inner_steps
        r = tenacia_run(c.arm, run_args, out / f"{i:02d}-{c.arm}-s{seed}", None, 0, None, None, extra=c.overrides(seed))
        rows.append({**asdict(c), "min_lr_ratio": c.floor, "seed": seed, "eval_loss": r.get("eval_loss"),
                     "evals": r.get("evals"), "error": r.get("error")})
        print(f"{c.arm:<18} H {c.inner_steps} lr {c.lr:g} floor {c.floor:g} outer {c.outer_lr} {c.outer_momentum} "
              f"{' '.join(c.extra)} seed {seed}: {r.get('eval_loss') or r.get('error')}", flush=True)
        write_results("slow_links_tune", {"rows": rows}, out.parent / f"slow_links_tune-{stamp}.json", indent=1)
    best = select(rows)
    print("\nlowest mean eval loss at the budget over the selection seeds, per strategy:")
    for arm, b in best.items():
        print(f"  {arm:<18} lr {b['lr']:g}, floor {b['min_lr_ratio']:g}, outer {b['outer_lr']} "
              f"{b['outer_momentum']}: {b['mean']:.4f} {b['losses']}")
    if not only:
        settings = {arm: {k: b[k] for k in ("lr", "min_lr_ratio", "outer_lr", "outer_momentum") if b[k] is not None}
                    for arm, b in best.items()}
        probes = [str(f) for f in a.resume] + ([f"bench/results/slow_links_tune-{stamp}.json"] if todo else [])
        SETTINGS_FILE.write_text(json.dumps({"probe": probes, "settings": settings}, indent=1) + "\n")
        print(f"wrote {SETTINGS_FILE}")


if __name__ == "__main__":
    main()
