"""Extra tokens a compressed outer exchange needs for fp32 diloco's eval loss, from committed probes.

    python bench/compression_tokens.py

The planner charges compression as a token overhead (tenacia/plan/quality.py). This reads the
plain-loop probes of docs/benchmarks.md ("Probes of 2026-12-04 18:45-19:18" and "18:32-20:16";
int4 through the reduce-scatter in the trainer's form, its sums' errors dropped: 2026-12-05 02:22,
diloco H = 100, outer Nesterov 0.7/0.9, dense, block 256, error feedback; the JSONs in
bench/results, committed) and turns each compressed arm's loss into tokens: the tokens fp32
diloco, same seed and schedule, takes to reach that loss, read off its own curve (loss linear in
log2 tokens between its measured points; a loss outside them is extrapolated from the nearest
segment and marked). Extra tokens = the arm's tokens / those - 1.

- Constant inner rate (``floor`` 1): a run's row at k budgets is what a run of k budgets gives,
  so fp32's rows are its curve (seed 1 to 8x, seed 2 to 4x).
- Inner rate decayed to 0.1 (16x): each budget is its own run; fp32's curve is seed 1's 8x and
  16x runs, and seed 2 (no 8x run) borrows seed 1's slope between them (marked).

Prints one row per cell and the median per arm; reads files, trains nothing.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
STAMP = "diloco_gap-seed{}-{}.json"
# seed -> fp32 diloco, constant inner rate: its rows at 1x..8x (seed 1), 1x..4x (seed 2)
FP32_CONSTANT = {1: "20261204-183807", 2: "20261204-154306"}
# arm -> seed -> file (constant inner rate; every row a budget)
ARMS = {
    "int4 reduce-scatter (sums' errors folded)": {1: "20261204-185642", 2: "20261204-185646"},
    "int4 reduce-scatter (sums' errors dropped)": {1: "20261205-022533", 2: "20261205-022532"},
    "int2 all-gather": {1: "20261204-190007", 2: "20261204-190010"},
    "int2 reduce-scatter (sums' errors dropped)": {1: "20261204-191729", 2: "20261204-191738"},
}
# 16x, inner rate decayed to 0.1: (fp32 8x run or None, fp32 16x run, int2 reduce-scatter 16x run)
DECAYED = {1: ("20261204-185009", "20261204-191815", "20261204-195142"),
           2: (None, "20261204-195121", "20261204-201605")}
DECAYED_ARM = "int2 reduce-scatter (sums' errors dropped), 16x decayed"


def rows(seed: int, stamp: str) -> list[tuple[float, float]]:
    """(tokens, eval loss) of every row of one committed probe file."""
    doc = json.loads((RESULTS / STAMP.format(seed, stamp)).read_text())
    return [(r["tokens"], r["eval_loss"]) for r in doc["rows"]]


def tokens_for_loss(curve: list[tuple[float, float]], loss: float) -> tuple[float, bool]:
    """Tokens at which ``curve`` (tokens ascending, loss falling) reaches ``loss``, loss linear in
    log2 tokens between its points; and whether that was extrapolated past its ends."""
    pts = sorted(curve)
    for (t0, l0), (t1, l1) in zip(pts, pts[1:], strict=False):
        if l1 <= loss <= l0:
            return t0 * (t1 / t0) ** ((l0 - loss) / (l0 - l1)), False
    (t0, l0), (t1, l1) = pts[:2] if loss > pts[0][1] else pts[-2:]
    return t0 * (t1 / t0) ** ((l0 - loss) / (l0 - l1)), True


def cells() -> list[dict]:
    out = []
    for arm, files in ARMS.items():
        for seed, stamp in files.items():
            curve = rows(seed, FP32_CONSTANT[seed])
            for tokens, loss in rows(seed, stamp):
                need, extrapolated = tokens_for_loss(curve, loss)
                out.append({"arm": arm, "seed": seed, "budgets": round(tokens / curve[0][0]), "loss": loss,
                            "extra": tokens / need - 1, "note": "extrapolated" if extrapolated else ""})
    (t8, l8), (t16, l16) = rows(1, DECAYED[1][0])[-1], rows(1, DECAYED[1][1])[-1]
    slope = (l8 - l16) / math.log2(t16 / t8)  # seed 1's loss per doubling of tokens, 8x to 16x
    for seed, (fp8x, fp16x, int2) in DECAYED.items():
        (t16, l16), (_, loss) = rows(seed, fp16x)[-1], rows(seed, int2)[-1]
        need = t16 * 2 ** (-(loss - l16) / slope)  # seed 1: tokens_for_loss between its 8x and 16x runs
        out.append({"arm": DECAYED_ARM, "seed": seed, "budgets": 16, "loss": loss, "extra": t16 / need - 1,
                    "note": "" if fp8x else "seed 1's slope"})
    return out


def main() -> None:
    found = cells()
    print("| arm | seed | budgets | eval loss | extra tokens for fp32 diloco's loss | |")
    print("|---|---:|---:|---:|---:|---|")
    for c in found:
        print(f"| {c['arm']} | {c['seed']} | {c['budgets']}x | {c['loss']:.4f} | {c['extra']:+.1%} | {c['note']} |")
    print()
    for arm in [*ARMS, DECAYED_ARM]:
        mine = [c["extra"] for c in found if c["arm"] == arm]
        inside = [c["extra"] for c in found if c["arm"] == arm and c["note"] != "extrapolated"]
        print(f"{arm}: median {statistics.median(mine):+.1%} over {len(mine)} cells"
              f" ({statistics.median(inside):+.1%} over the {len(inside)} not extrapolated)")
    int2_rs = [c["extra"] for c in found if c["arm"].startswith("int2 reduce-scatter")]
    print(f"int2 reduce-scatter, both schedules: median {statistics.median(int2_rs):+.1%} over {len(int2_rs)} cells")

if __name__ == "__main__":
    main()
