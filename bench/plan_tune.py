"""Fit the planner's tunable efficiency inputs on the tuning set of `tenacia plan validate`, and
only on it: k0 (``Assumptions.gemm_k_overhead``) and the large-GEMM efficiency of the A100 and of
Hopper (catalog ``matmul_efficiency``). Held-out cases are never read.

    .venv/bin/python bench/plan_tune.py            # training: k0, matmul_efficiency
    .venv/bin/python bench/plan_tune.py serving    # serving: step.layer_overhead_us, step.expert_imbalance

prints, for each grid point, the tuning set's errors; then the k0 whose families' best
efficiencies give the smallest largest absolute error (each family is fitted on its own cases,
k0 is shared). The values in catalog.toml and assumptions.py are that point.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tenacia import config  # noqa: E402
from tenacia.plan import catalog as catalog_mod  # noqa: E402
from tenacia.plan.inputs import build  # noqa: E402
from tenacia.plan.scenario import TrainPlan, estimate  # noqa: E402
from tenacia.plan.serving import ServePlan, estimate_serving  # noqa: E402
from tenacia.plan.validation import METRICS, load_cases  # noqa: E402

FAMILIES = {"a100": "ampere", "h100": "hopper", "h800": "hopper"}
K0 = (0, 64, 128, 192, 256, 384)
EFFICIENCY = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
OVERHEAD_US = (0, 50, 100, 150, 200, 250, 300, 350, 400)
IMBALANCE = (1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 4.5, 5.0)


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
    """step.layer_overhead_us and step.expert_imbalance of ServePlan on the serving tuning cases
    (DeepSeek's H800 decode and prefill throughput)."""
    cases = [c for c in load_cases() if c.set == "tuning" and c.kind == "serving"]
    chips = catalog_mod.load_catalog()
    best = None
    for overhead, imbalance in itertools.product(OVERHEAD_US, IMBALANCE):
        errors = []
        for case in cases:
            plan = config.from_dict(ServePlan, build(None, [], [*case.overrides, f"step.layer_overhead_us={overhead}",
                                                                f"step.expert_imbalance={imbalance}"]))
            s = estimate_serving(plan, chips[plan.chip]).summary()
            errors.append(METRICS[case.metric](s) / case.published - 1)
        worst = max(abs(e) for e in errors)
        print(f"step.layer_overhead_us={overhead:4g} step.expert_imbalance={imbalance:.2f}  "
              + "  ".join(f"{c.id} {e:+.1%}" for c, e in zip(cases, errors, strict=True)))
        if best is None or worst < best[0]:
            best = (worst, overhead, imbalance)
    print(f"\nbest: step.layer_overhead_us={best[1]:g} step.expert_imbalance={best[2]:.2f} "
          f"(largest |error| {best[0]:.1%})")


def _family(plan: TrainPlan, chips: dict) -> str:
    return FAMILIES[plan.fleet.groups[0].chip]

if __name__ == "__main__":
    tune_serving() if sys.argv[1:] == ["serving"] else main()
