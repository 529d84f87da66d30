"""The probe that picks each strategy's inner learning rate and outer step for bench/slow_links.py.

    .venv/bin/python bench/slow_links_tune.py            # 22 runs, about 15 min on 2 quiet cores; loopback, no link

DiLoCo's papers tune the inner learning rate per setting; a diloco round trains 8-sample inner
batches where ddp trains 32, so one rate does not suit both. This runs each candidate of
``CANDIDATES`` once, as bench/slow_links.py runs its arm (``tenacia_run``: the same model,
budget, H and evals) but on other seeds (``train.seed=1``, ``data.seed=1``: another
initialization and sample order), on loopback (the loss does not depend on the link), and prints
each one's eval loss at the budget and, per strategy, the lowest, which it writes to
``bench/slow_links_settings.json`` (``slow_links_arms.SETTINGS`` reads it): fixed before the bench
runs. The rule: the lowest eval loss at the budget on this probe, nothing read from the bench's
own runs. diloco-int8 and streaming (fp32) take diloco's and streaming-int4's; torchft's LocalSGD
(a plain average of the weights) the best diloco candidate with a plain-average outer step (lr 1,
no momentum).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "peers")]

from slow_links_arms import SETTINGS_FILE, tenacia_run  # noqa: E402

SEEDS = ["train.seed=1", "data.seed=1"]
# (arm, inner lr, floor of its schedule, outer lr, outer momentum); a floor of 1 is a constant rate
CANDIDATES = [
    *[("ddp", lr, 0.1, None, None) for lr in (3e-3, 5e-3, 8e-3)], ("ddp", 5e-3, 1.0, None, None),
    *[("diloco", lr, floor, olr, mom) for lr, floor in ((1e-3, 0.1), (1e-3, 1.0), (2e-3, 1.0), (3e-3, 0.1), (3e-3, 1.0),
                                                        (5e-3, 1.0))
      for olr, mom in ((0.7, 0.9), (1.0, 0.0))],
    *[("diloco-int4-topk", lr, 1.0, 1.0, 0.0) for lr in (1e-3, 3e-3, 5e-3)],
    *[("streaming-int4", lr, 1.0, 0.7, 0.9) for lr in (2e-3, 3e-3, 5e-3)],
]


def overrides(lr: float, floor: float, outer_lr: float | None, momentum: float | None) -> list[str]:
    out = [*SEEDS, f"optim.lr={lr:g}", f"optim.min_lr_ratio={floor:g}"]
    if outer_lr is not None:
        out += [f"replicas.outer.lr={outer_lr:g}", f"replicas.outer.momentum={momentum:g}"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated arms to probe (default: all)")
    p.add_argument("--resume", type=Path, help="a probe's JSON: its candidates are taken as run, not run again")
    a = p.parse_args()
    # bench/slow_links.py's defaults
    a.replicas, a.preset, a.seq_len, a.batch, a.tokens, a.inner_steps = 4, "micro", 64, 8, 1_638_400, 100
    a.fragments, a.topk, a.eval_every, a.eval_batches, a.timeout, a.past = 4, 0.03, 409_600, 8, 900, 1.0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"slow_links_tune-{stamp}"
    rows = json.loads(a.resume.read_text()) if a.resume else []
    done = {(r["arm"], r["lr"], r["min_lr_ratio"], r["outer_lr"], r["outer_momentum"]) for r in rows}
    only = [x for x in a.only.split(",") if x]
    for i, (arm, lr, floor, olr, mom) in enumerate(CANDIDATES):
        if (only and arm not in only) or (arm, lr, floor, olr, mom) in done:
            continue
        r = tenacia_run(arm, a, out / f"{i:02d}-{arm}", None, 0, None, None, extra=overrides(lr, floor, olr, mom))
        rows.append({"arm": arm, "lr": lr, "min_lr_ratio": floor, "outer_lr": olr, "outer_momentum": mom,
                     "eval_loss": r.get("eval_loss"), "evals": r.get("evals"), "error": r.get("error")})
        print(f"{arm:<18} lr {lr:g} floor {floor:g} outer {olr} {mom}: {r.get('eval_loss') or r.get('error')}",
              flush=True)
        (out.parent / f"slow_links_tune-{stamp}.json").write_text(json.dumps(rows, indent=1))
    best = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        done = [r for r in rows if r["arm"] == arm and r["eval_loss"] is not None]
        if done:
            best[arm] = min(done, key=lambda r: r["eval_loss"])
    plain = [r for r in rows if r["arm"] == "diloco" and r["outer_lr"] == 1.0 and r["outer_momentum"] == 0.0
             and r["eval_loss"] is not None]
    if plain:
        best["localsgd"] = min(plain, key=lambda r: r["eval_loss"])
    for arm, twin in (("diloco-int8", "diloco"), ("streaming", "streaming-int4")):
        if twin in best:
            best[arm] = best[twin]
    print("\nlowest eval loss at the budget, per strategy:")
    settings = {}
    for arm, b in best.items():
        print(f"  {arm:<18} lr {b['lr']:g}, floor {b['min_lr_ratio']:g}, outer {b['outer_lr']} "
              f"{b['outer_momentum']}: {b['eval_loss']:.4f}")
        settings[arm] = {k: b[k] for k in ("lr", "min_lr_ratio", "outer_lr", "outer_momentum") if b[k] is not None}
    if not only:
        SETTINGS_FILE.write_text(json.dumps({"probe": f"bench/results/slow_links_tune-{stamp}.json",
                                             "settings": settings}, indent=1) + "\n")
        print(f"wrote {SETTINGS_FILE}")

if __name__ == "__main__":
    main()
