"""Why the planner puts an Ascend 910C above an H100 at DeepSeek-V3 inference when the press put
it at ~60%: the 910C planned as the catalog has it, then with one of its advantages taken away at
a time. One command (under a second):

    .venv/bin/python bench/plan_910c_vs_h100.py

prints decode tokens/s per chip at each TPOT target and prefill tokens/s per chip for each
variant, and the ratio of each 910C variant to an H100 in FP8 (the H100 at its best precision),
and writes them to bench/results/plan-910c-vs-h100-<time>.json.
Every variant is a plain `tenacia plan serve` of DeepSeek-V3 (2,000 + 500 tokens) on a catalog
chip changed in the named figures only.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

from tenacia import config  # noqa: E402
from tenacia.config import ConfigError  # noqa: E402
from tenacia.plan.catalog import load_catalog  # noqa: E402
from tenacia.plan.serving import CURVE_MS, ServePlan, estimate_serving  # noqa: E402

# (label, chip, precision, figures changed)
VARIANTS = (
    ("h100, fp8", "h100", "fp8", {}),
    ("h100, bf16", "h100", "bf16", {}),
    ("910c, int8 (the catalog)", "ascend-910c", "int8", {}),
    ("910c, int8 at the bf16 peak (no INT8 kernels)", "ascend-910c", "int8", {"int8_tflops": None}),
    ("910c, bf16", "ascend-910c", "bf16", {}),
    ("910c, int8, 8-chip scale-up domain (no supernode)", "ascend-910c", "int8", {"scale_up_domain": 8}),
    ("910c, bf16, 8-chip scale-up domain", "ascend-910c", "bf16", {"scale_up_domain": 8}),
    ("910c, int8, all-to-all at the default efficiency", "ascend-910c", "int8", {"alltoall_efficiency": None}),
    ("910c, int8, 80 GB", "ascend-910c", "int8", {"memory_gb": 80}),
)


def run(chips: dict, chip: str, precision: str, changes: dict) -> tuple[list[float], float] | str:
    plan = config.load(ServePlan, None, [f"chip='{chip}'", f"precision='{precision}'"])
    try:
        est = estimate_serving(plan, dataclasses.replace(chips[chip], **changes))
    except ConfigError as e:
        return str(e)
    return [p["decode_tps_per_chip"] for p in est.curve], est.prefill_tps_per_chip


def main() -> None:
    chips = load_catalog()
    results = {label: run(chips, chip, precision, changes) for label, chip, precision, changes in VARIANTS}
    head = "  ".join(f"{ms:>6g}" for ms in CURVE_MS)
    print(f"{'decode tokens/s per chip at TPOT (ms)':52s} {head}  prefill")
    for label, r in results.items():
        if isinstance(r, str):
            print(f"{label:52s} cannot plan: {r}")
            continue
        print(f"{label:52s} " + "  ".join(f"{v:6,.0f}" for v in r[0]) + f"  {r[1]:6,.0f}")
    base = results["h100, fp8"]
    print(f"\n{'910C variant / h100 fp8':52s} {head}  prefill")
    for label, r in results.items():
        if label.startswith("910c") and not isinstance(r, str):
            ratios = [f"{a / b:6.0%}" if b else "     -" for a, b in zip(r[0], base[0], strict=True)]
            print(f"{label:52s} " + "  ".join(ratios) + f"  {r[1] / base[1]:6.0%}")
    doc = {"tpot_ms": list(CURVE_MS), "variants": {
        label: {"error": r} if isinstance(r, str) else {"decode_tps_per_chip": r[0], "prefill_tps_per_chip": r[1]}
        for label, r in results.items()}}
    print(f"wrote {write_results('plan-910c-vs-h100', doc).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
