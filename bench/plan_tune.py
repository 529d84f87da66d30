"""Fit the planner's tunable efficiency inputs on the tuning set of `tenacia plan validate`, and
only on it: k0 (``Assumptions.gemm_k_overhead``) and the large-GEMM efficiency of the A100 and of
Hopper (catalog ``matmul_efficiency``). Held-out cases are never read.

    .venv/bin/python bench/plan_tune.py            # training: k0, matmul_efficiency
    .venv/bin/python bench/plan_tune.py serving    # serving: step.moe_layer_overhead_us

prints, for each grid point, the tuning set's errors; then the k0 whose families' best
efficiencies give the smallest largest absolute error (each family is fitted on its own cases,
k0 is shared). The values in catalog.toml and assumptions.py are that point.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tenacia import config  # noqa: E402
from tenacia.config import ConfigError  # noqa: E402
from tenacia.plan import catalog as catalog_mod  # noqa: E402
from tenacia.plan.inputs import build  # noqa: E402
from tenacia.plan.scenario import TrainPlan, estimate  # noqa: E402
from tenacia.plan.serving import ServePlan, estimate_serving  # noqa: E402
from tenacia.plan.validation import METRICS, load_cases  # noqa: E402

FAMILIES = {"a100": "ampere", "h100": "hopper", "h800": "hopper"}
K0 = (0, 64, 128, 192, 256, 384)
EFFICIENCY = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
OVERHEAD_US = tuple(range(0, 801, 25))


def main() -> None:
    cases = [c for c in load_cases() if c.set == "tuning" and c.kind == "training"]
    base = catalog_mod.load_catalog()
    plans = [(c, config.from_dict(TrainPlan, build(c.scenario or None, [tuple(f) for f in c.flags], c.overrides)))
             for c in cases]
    families = sorted(set(FAMILIES.values()))
    by_family = {f: [(c, p) for c, p in plans if _family(p, base) == f] for f in families}
    results = {}  # (k0, family) -> (worst error, efficiency, errors) of that family's best efficiency
    for k0 in K0:
        for family in families:
            for eff in EFFICIENCY:
                chips = {k: dataclasses.replace(v, matmul_efficiency=eff) if FAMILIES.get(k) == family else v
                         for k, v in base.items()}
                errors = []
                for case, plan in by_family[family]:
                    p = dataclasses.replace(plan, assumptions=dataclasses.replace(plan.assumptions, gemm_k_overhead=k0))
                    est, fits = estimate(p, chips)
                    errors.append(METRICS[case.metric]({"training": est.summary() | {"layouts_fitting": fits}})
                                  / case.published - 1)
                worst = max(abs(e) for e in errors)
                print(f"k0={k0:4g} {family}={eff:.2f}  " + "  ".join(
                    f"{c.id} {e:+.1%}" for (c, _), e in zip(by_family[family], errors, strict=True)))
                if (k0, family) not in results or worst < results[k0, family][0]:
                    results[k0, family] = (worst, eff, errors)
    k0 = min(K0, key=lambda k: max(results[k, f][0] for f in families))
    print(f"\nbest: k0={k0:g}, " + ", ".join(
        f"{f} matmul_efficiency={results[k0, f][1]:.2f} (largest |error| {results[k0, f][0]:.1%})" for f in families))


def tune_serving() -> None:
    """step.moe_layer_overhead_us of ServePlan on the serving tuning cases measured at full load
    (``load = 'benchmark'``: Ant Group's H20 figures); the production averages (DeepSeek's H800
    figures, below capacity in quiet hours) are printed beside them but not fitted. The expert
    imbalance is not fitted: StepCosts' default comes from the same report's load balance ratio.
    The best point has the smallest root-mean-square log error over the benchmark cases (a
    largest-error criterion would be set by the prefill case, which the constant barely moves);
    a point where a case cannot be planned is skipped."""
    cases = [c for c in load_cases() if c.set == "tuning" and c.kind == "serving"]
    fitted = [c.load == "benchmark" for c in cases]
    chips = catalog_mod.load_catalog()
    best = None
    for overhead in OVERHEAD_US:
        errors = []
        for case in cases:
            plan = config.from_dict(ServePlan, build(None, [], [*case.overrides, f"step.moe_layer_overhead_us={overhead}"]))
            try:
                s = estimate_serving(plan, chips[plan.chip]).summary()
            except ConfigError:
                errors.append(math.inf)
                continue
            errors.append(METRICS[case.metric](s) / case.published - 1)
        mine = [e for e, f in zip(errors, fitted, strict=True) if f]
        worst = max(abs(e) for e in mine)
        rms = math.sqrt(sum(math.log1p(e) ** 2 for e in mine) / len(mine)) if math.isfinite(worst) else math.inf
        print(f"step.moe_layer_overhead_us={overhead:4g} rms log error {rms:.3f} largest {worst:.1%}  "
              + "  ".join(f"{c.id}{'' if f else ' (production, not fitted)'} {e:+.1%}"
                          for c, e, f in zip(cases, errors, fitted, strict=True)))
        if best is None or rms < best[0]:
            best = (rms, overhead, worst)
    print(f"\nbest: step.moe_layer_overhead_us={best[1]:g} "
          f"(rms log error {best[0]:.3f}, largest |error| {best[2]:.1%} on the benchmark cases)")


def _family(plan: TrainPlan, chips: dict) -> str:
    return FAMILIES[plan.fleet.groups[0].chip]

if __name__ == "__main__":
    tune_serving() if sys.argv[1:] == ["serving"] else main()
