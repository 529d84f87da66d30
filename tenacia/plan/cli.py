"""Subcommand `plan`: `train`, `compare`, `sync`, `serve`, `validate` and `chips`. Thin: parse,
build, run, print."""

from __future__ import annotations

import argparse

from ..config import add_config_args

GOODPUT_SCALES = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]


def _common(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--catalog", default=None, help="TOML file of extra chips (same format as the built-in catalog)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def _train_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--model", help="model preset (deepseek-v3, llama-3-405b, r2-guess) or TOML file")
    p.add_argument("--fleet", help="fleet preset (seed-cluster, ...), TOML file, or chip:count[+chip:count]")
    p.add_argument("--tokens", help="training tokens, e.g. 14.8e12 (default: the model preset's)")
    p.add_argument("--batch", help="global batch in sequences (default: the model preset's)")
    p.add_argument("--precision", choices=("bf16", "fp8"), help="matmul precision (default bf16)")
    p.add_argument("--layout", help="auto (search, the default) or tp=..,pp=..,ep=..,schedule=..")
    p.add_argument("--recovery", help="checkpoint or live")
    p.add_argument("--failure-scale", help="multiply every catalog failure rate")
    p.add_argument("--sdc-policy", help="how silent corruptions are caught: none (noticed later, rolled back) "
                   "or in_band (caught at the step, re-executed)")
    p.add_argument("--sdc-scale", help="multiply every chip's silent-corruption rate")
    p.add_argument("--trials", help="Monte Carlo trials (default 1000)")
    p.add_argument("--deadline-days", help="report P(finish by this day); default failure-free time x 1.1")
    p.add_argument("--calibrate", metavar="RUN_DIR", help="use a tenacia run's measured detection, stall "
                   "and heal medians (RUN_DIR/events.jsonl) as live-recovery inputs")
    p.add_argument("--charts", metavar="DIR", help="write completion-time and goodput PNG charts here")
    p.add_argument("--strategy", help="sync between sites: ddp (every step), diloco (every H steps), "
                   "streaming (fragments in turn, overlapped)")
    p.add_argument("--inner-steps", help="H: inner steps per outer exchange (diloco, streaming)")
    p.add_argument("--fragments", help="F: fragments of a streaming exchange")
    p.add_argument("--compression", help="outer exchange: fp32, int8, int4 or int2 (diloco, streaming)")
    p.add_argument("--exchange", help="how it travels: ring, all_gather or reduce_scatter (diloco, streaming)")
    p.add_argument("--topk", help="fraction of the outer exchange's elements sent (0: all)")
    p.add_argument("--rtt-ms", help="round trip between sites, ms")
    p.add_argument("--gbit-s", help="link rate between sites, Gbit/s")
    p.add_argument("--calibrate-links", metavar="JSON", help="fit sync.link.efficiency from a measured "
                   "slow-link run (schema: tenacia/plan/calibrate.py read_link_calibration)")


FLAGS = {"model": "model", "fleet": "fleet", "tokens": "tokens", "batch": "global_batch_seqs",
         "precision": "precision", "layout": "layout", "recovery": "recovery",
         "failure_scale": "recovery.failure_scale", "sdc_policy": "sdc.policy", "sdc_scale": "sdc.rate_scale",
         "trials": "montecarlo.trials",
         "deadline_days": "montecarlo.deadline_days", "catalog": "catalog",
         "strategy": "sync.strategy", "inner_steps": "sync.inner_steps", "fragments": "sync.fragments",
         "compression": "sync.compression", "exchange": "sync.exchange", "topk": "sync.topk", "rtt_ms": "sync.link.rtt_ms",
         "gbit_s": "sync.link.gbit_s"}
SERVE_FLAGS = {"model": "model", "chip": "chip", "precision": "precision", "tp": "tp", "tpot_ms": "tpot_ms",
               "tokens_per_day": "demand.tokens_per_day", "input_len": "demand.input_len",
               "output_len": "demand.output_len", "cache_hit": "demand.cache_hit_rate",
               "peak_factor": "demand.peak_factor", "deployment": "deployment", "catalog": "catalog"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="plan a fleet: training time and cost under failures, serving chips")
    psub = p.add_subparsers(dest="plan_command", required=True, metavar="ACTION")

    t = psub.add_parser("train", help="how long a training run takes, what it costs, will it finish")
    _train_args(t)
    t.set_defaults(handler=cmd_train)

    c = psub.add_parser("compare", help="side-by-side training scenarios (cartesian product of --vary)")
    _train_args(c)
    c.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                   help="a scenario axis, e.g. --vary fleet=h800-8k,ascend-910c-8k --vary recovery=checkpoint,live")
    c.set_defaults(handler=cmd_compare)

    y = psub.add_parser("sync", help="which sync strategy, inner steps and compression keep a fleet of "
                        "sites busy, and the time and cost to the token budget at equal quality")
    _train_args(y)
    y.add_argument("--top", type=int, default=0, metavar="N", help="print only the N fastest candidates "
                   "(the table; --json has all)")
    y.set_defaults(handler=cmd_sync)

    s = psub.add_parser("serve", help="per-chip serving throughput and the chips a demand needs")
    _common(s)
    s.add_argument("--model", help="model preset or TOML file")
    s.add_argument("--chip", help="catalog chip, e.g. h800, ascend-910c")
    s.add_argument("--precision", choices=("bf16", "fp8"))
    s.add_argument("--tp", help="chips per decode instance (default: search)")
    s.add_argument("--tpot-ms", help="time-per-output-token target in ms (default 50)")
    s.add_argument("--tokens-per-day", help="input+output tokens served per day")
    s.add_argument("--input-len", help="prompt tokens per request")
    s.add_argument("--output-len", help="generated tokens per request")
    s.add_argument("--cache-hit", help="share of input tokens served from the prefix cache")
    s.add_argument("--peak-factor", help="peak / mean request rate")
    s.add_argument("--deployment", choices=("disaggregated", "aggregated"),
                   help="prefill on its own chips, or in chunks inside the decode steps (default disaggregated)")
    s.set_defaults(handler=cmd_serve)

    from .validation import SETS

    v = psub.add_parser("validate", help="the planner against published figures, tuning and held-out sets apart")
    v.add_argument("--set", choices=SETS, help="only this set")
    v.add_argument("--case", action="append", default=[], help="only this case id (repeatable)")
    v.add_argument("-o", dest="extra", action="append", default=[],
                   help="KEY=VALUE added to every case's inputs: a what-if, not a validation")
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=cmd_validate)

    k = psub.add_parser("chips", help="the chip catalog, with uncertain figures marked")
    k.add_argument("--catalog", default=None, help="TOML file of extra chips")
    k.add_argument("--json", action="store_true")
    k.set_defaults(handler=cmd_chips)


def _flags(args: argparse.Namespace, table: dict[str, str]) -> list[tuple[str, str]]:
    return [(kind, getattr(args, name)) for name, kind in table.items() if getattr(args, name, None) is not None]


def _links(args: argparse.Namespace):
    from .calibrate import read_link_calibration

    return read_link_calibration(args.calibrate_links) if args.calibrate_links else None


def _plan(args: argparse.Namespace, extra: list[tuple[str, str]] = (), links=None):
    """The plan of the flags; a link calibration's efficiency in place of sync.link.efficiency."""
    from .. import config
    from .inputs import build
    from .scenario import TrainPlan

    fitted = [("sync.link.efficiency", repr(links.efficiency))] if links else []
    return config.from_dict(TrainPlan, build(args.config, _flags(args, FLAGS) + list(extra) + fitted, args.override))


def _print(args: argparse.Namespace, summary: dict, table) -> None:
    from rich.console import Console

    from .report import dumps

    if args.json:
        print(dumps(summary))
    else:
        Console(width=160).print(table)


def cmd_train(args: argparse.Namespace) -> int:
    from .calibrate import read_calibration
    from .report import train_table
    from .scenario import run_train

    calibration = read_calibration(args.calibrate) if args.calibrate else None
    links = _links(args)
    result = run_train(_plan(args, links=links), calibration)
    summary = result.summary() | {"link_calibration": links.summary() if links else None}
    if args.charts:
        from .charts import completion_chart, goodput_chart
        from .scenario import goodput_curve

        label = f"{result.plan.recovery.strategy}"
        summary["charts"] = [str(completion_chart(
            [(label, result.outcome.completion_s / 86400, result.estimate.ideal_days)],
            result.deadline_s / 86400, f"{args.charts}/completion.png")), str(goodput_chart(
            [(label, *goodput_curve(result, GOODPUT_SCALES))], f"{args.charts}/goodput.png"))]
    _print(args, summary, train_table(summary))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .calibrate import read_calibration
    from .inputs import variations
    from .report import compare_table
    from .scenario import goodput_curve, run_train

    calibration = read_calibration(args.calibrate) if args.calibrate else None
    links = _links(args)
    rows, results = [], []
    for combo in variations(args.vary):
        label = ", ".join(f"{k}={v}" for k, v in combo) or "base"
        result = run_train(_plan(args, combo, links), calibration)
        rows.append((label, result.summary()))
        results.append((label, result))
    summary = {"scenarios": [{"label": label, **s} for label, s in rows]}
    if args.charts:
        from .charts import completion_chart, goodput_chart

        deadline = results[0][1].deadline_s / 86400 if args.deadline_days else None
        summary["charts"] = [
            str(completion_chart([(label, r.outcome.completion_s / 86400, r.estimate.ideal_days) for label, r in results],
                                 deadline, f"{args.charts}/completion.png")),
            str(goodput_chart([(label, *goodput_curve(r, GOODPUT_SCALES)) for label, r in results],
                              f"{args.charts}/goodput.png"))]
    _print(args, summary, compare_table(rows))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from .. import config
    from .report import sync_table
    from .scenario import search_sync
    from .sites import sites_summary

    links = _links(args)
    plan = _plan(args, links=links)
    sites, found = search_sync(plan)
    summary = {"inputs": config.to_dict(plan), "sites": sites_summary(sites, plan.fleet.balance),
               "candidates": [e.summary() for e in found],
               "link_calibration": links.summary() if links else None}
    _print(args, summary, sync_table(summary, args.top))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .. import config
    from .catalog import get_chip, load_catalog
    from .inputs import build
    from .report import serve_table
    from .serving import ServePlan, estimate_serving

    plan = config.from_dict(ServePlan, build(args.config, _flags(args, SERVE_FLAGS), args.override))
    chip = get_chip(load_catalog(plan.catalog or None), plan.chip)
    summary = {"inputs": config.to_dict(plan)} | estimate_serving(plan, chip).summary()
    _print(args, summary, serve_table(summary))
    return 0


def cmd_chips(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .catalog import load_catalog
    from .report import chips_table

    chips = load_catalog(args.catalog)
    summary = {key: {name: asdict(fig) for name, fig in chip.figures.items()} | {"name": chip.name}
               for key, chip in chips.items()}
    _print(args, summary, chips_table(chips))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .report import validation_table
    from .validation import by_set, load_cases, pooled, run_case

    cases = [c for c in load_cases() if args.set in (None, c.set) and (not args.case or c.id in args.case)]
    results = [run_case(c, tuple(args.extra)) for c in cases]
    summary = {"cases": [{"id": r.case.id, "set": r.case.set, "kind": r.case.kind, "what": r.case.what,
                          "published": r.case.published, "lower_bound": r.case.lower_bound,
                          "upper_bound": r.case.upper_bound,
                          "predicted": r.predicted, "error": r.error, "met": r.met,
                          "band": list(r.band) if r.band else None, "in_band": r.in_band, "problem": r.problem,
                          "source": r.case.source} for r in results],
               "sets": by_set(results), "held_out_pooled": pooled(results)}
    _print(args, summary, validation_table(summary))
    return 0
