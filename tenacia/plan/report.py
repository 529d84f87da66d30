"""Tables (rich) and JSON for plan results. Input: the ``summary()`` dicts of results."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.table import Table

from .catalog import Chip


def jsonable(obj: Any) -> Any:
    """Plain JSON tree: numpy scalars to floats, infinities and NaN to null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2)


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "never"
    if abs(x) >= 1e5:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _layout(t: dict) -> str:
    lay = t["layout"]
    schedule = lay["schedule"] + (f" v={lay['virtual_stages']}" if lay["schedule"] == "interleaved" else "")
    return (f"TP{lay['tp']} CP{lay['cp']} PP{lay['pp']} EP{lay['ep']} DP{lay['dp']} ({schedule}, "
            f"micro-batch {lay['microbatch_seqs']}, ZeRO-{lay['zero']}, recompute {lay['recompute']}, "
            f"{t['layouts_fitting']} layouts estimated)")


def train_table(s: dict, title: str = "tenacia plan train") -> Table:
    t, sim, rel, exp = s["training"], s["simulation"], s["reliability"], s["expected"]
    inputs = s["inputs"]
    fleet = " + ".join(f"{g['chips']:,} {g['chip']}" for g in t["groups"])
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("model", f"{inputs['model']['preset'] or 'custom'}: {inputs['model']['activated_params_b']:g}B "
                  f"activated / {inputs['model']['total_params_b']:g}B, {t['tokens']:.3g} tokens, {t['precision']}"),
        ("fleet", fleet),
        ("layout", _layout(t) + ("; the largest site's, DP over every site (each site's below)" if s.get("sync") else "")),
        ("step time", f"{_num(t['step_time_s'])} s  ({_num(t['tokens_per_s'])} tokens/s)"),
    ]
    for g in t["groups"]:
        rows.append((f"  per micro-batch, {g['chip']}",
                     f"{_num(g['microbatch_s'])} s: matmul {_num(g['matmul_s'])}, attention {_num(g['attention_s'])}, "
                     f"memory {_num(g['memory_s'])}, TP {_num(g['tp_s'])}, EP {_num(g['ep_s'])}, PP {_num(g['pp_s'])}; "
                     f"{_num(g['memory_gb'])} GB/chip"))
    rows += [
        ("MFU", f"{t['mfu_bf16']:.1%} (hardware FLOPs: {t['hfu_bf16']:.1%}) of {t['mfu_peak']}"
                + (f"; {t['mfu_precision']:.1%} of FP8 peak" if t["mfu_precision"] else "")),
        ("failure-free", f"{t['ideal_days']:.1f} days, {_num(t['chip_hours'])} chip-hours, "
                         f"${_num(t['cost'])}, {_num(t['energy_mwh'])} MWh"),
        ("failures", f"{rel['strategy']}; fleet MTBF {_num(rel['fleet_mtbf_h'])} h; " + (
            f"checkpoint every {_num(rel['checkpoint_interval_min'])} min ({_num(rel['checkpoint_write_s'])} s stall)"
            if math.isfinite(rel["checkpoint_interval_min"]) else "no checkpoints (no failure kind rolls back)")),
        ("completion (days)", f"mean {_num(sim['days_mean'])}, p5 {_num(sim['days_p5'])}, p50 {_num(sim['days_p50'])}, "
                              f"p95 {_num(sim['days_p95'])} over {sim['trials']} trials"),
        ("goodput", f"{sim['goodput_mean']:.1%} (effective training time); {_num(sim['interruptions_mean'])} interruptions"),
        ("P(finish by deadline)", f"{sim['p_by_deadline']:.1%} by day {_num(sim['deadline_days'])}"
                                  + (f"; {1 - sim['finished']:.1%} never finish" if sim["finished"] < 1 else "")),
        ("expected with failures", f"{_num(exp['chip_hours'])} chip-hours, ${_num(exp['cost'])}, {_num(exp['energy_mwh'])} MWh"),
    ]
    rows += _sdc_rows(s["sdc"])
    if s.get("band"):
        lo, hi = s["band"]["low"], s["band"]["high"]
        rows.append(("failure-rate band", f"catalog low / high rates: mean {_num(lo['days_mean'])} / {_num(hi['days_mean'])} "
                                          f"days, goodput {lo['goodput_mean']:.1%} / {hi['goodput_mean']:.1%}, "
                                          f"P(deadline) {lo['p_by_deadline']:.0%} / {hi['p_by_deadline']:.0%}"))
    if sim.get("never_finishes"):
        rows.append(("progress", sim["never_finishes"]))
    if s.get("sync"):
        rows += _sync_rows(s["sync"])
    if s.get("calibration"):
        cal = s["calibration"]
        rows.append(("calibrated from", f"{cal['run_dir']}: " + ", ".join(
            f"{k} {v:.3g} s (n={cal['samples'][k]})" for k, v in cal["medians"].items())))
    flagged = sorted({f"{chip}: {', '.join(f)}" for chip, f in s["uncertain_inputs"].items() if f})
    if flagged:
        rows.append(("uncertain inputs", "; ".join(flagged)))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _sync_rows(y: dict) -> list[tuple[str, str]]:
    """The strategy between sites: what it sends, what shows, how busy the fleet stays."""
    link = y["link"]
    util = y["utilization"]
    shape = y["strategy"] + (f" H={y['inner_steps']}" if y["strategy"] != "ddp" else "") + (
        f" F={y['fragments']}" if y["strategy"] == "streaming" else "") + (
        f", {y['compression']} {y['exchange']}" if y["strategy"] != "ddp" else "") + (
        f", top-k {y['topk']:g}" if y["topk"] else "")
    return [
        ("sync between sites", f"{shape} over {y['sites']} sites; link {link['rtt_ms']:g} ms round trip, "
                               f"{link['gbit_s']:g} Gbit/s x efficiency {link['efficiency']:.3g}; "
                               f"{_num(y['exchange_gb'])} GB payload per site per round, {_num(y['wire_gb'])} GB "
                               f"sent, in {_num(y['exchange_s'])} s"),
        ("  compute utilization", f"lock-step {util['lockstep']:.1%}, work sized to speed {util['sized']:.1%} "
                                  f"(balance: {y['balance']}); token efficiency {y['token_efficiency']:.3g}: "
                                  f"{y['tokens_needed']:.3g} tokens for the budget's quality"),
    ] + [(f"  site {site['site'] or '-'}", f"{site['chips']}: {_site_layout(site['layout'])}, inner step "
                                          f"{_num(site['inner_step_s'])} s, {_site_rates(site)} tokens/s alone")
         for site in y.get("per_site", [])]


def _site_rates(site: dict) -> str:
    """A site's solo rate; lock-step and sized apart when its chip types differ in speed."""
    lock, sized = site["tokens_per_s"]["lockstep"], site["tokens_per_s"]["sized"]
    return _num(lock) if lock == sized else f"{_num(lock)} lock-step / {_num(sized)} sized"


def _site_layout(lay: dict) -> str:
    return f"TP{lay['tp']} CP{lay['cp']} PP{lay['pp']} EP{lay['ep']} DP{lay['dp']} {lay['schedule']}"


def sync_table(s: dict, top: int = 0):
    """``tenacia plan sync``: the sites, then the ``top`` fastest candidates to equal quality
    (0: every one), and ddp's row whatever its rank."""
    from rich.console import Group

    inputs = s["inputs"]
    link = inputs["sync"]["link"]
    shown = s["candidates"][:top] if top > 0 else list(s["candidates"])
    shown += [c for c in s["candidates"] if c["strategy"] == "ddp" and c not in shown]
    sites = Table(title=f"sites: {inputs['model']['preset'] or 'custom'}, {inputs['tokens']:.3g} tokens, "
                        f"batch {inputs['global_batch_seqs']:,} sequences, {inputs['precision']}")
    for col in ("site", "chips", "layout", "batch (seqs)", "inner step s", "solo tokens/s"):
        sites.add_column(col, justify="left" if col in ("site", "chips", "layout") else "right")
    for site in s["sites"]:
        lay = site["layout"]
        sites.add_row(site["site"] or "-", site["chips"], _site_layout(lay), _num(site["batch_seqs"]),
                      _num(site["inner_step_s"]), _site_rates(site))
    table = Table(title=f"sync between sites: link {link['rtt_ms']:g} ms round trip, {link['gbit_s']:g} Gbit/s x "
                        f"efficiency {link['efficiency']:.3g}; fastest to the token budget at equal quality first "
                        f"(balance {inputs['fleet']['balance']}: exposed s per round and cost under it); "
                        f"{len(shown)} of {len(s['candidates'])} candidates",
                  caption="outer: compression and exchange (ring, all_gather, reduce_scatter); GB sent: what one site "
                          "sends over its link per round of H inner steps; link s: that exchange on the link; "
                          "util: tokens/s over the sites' solo tokens/s (no link, no sync), lock-step and with work "
                          "sized to each site's speed; token eff: budget / tokens for equal quality")
    for col in ("strategy", "H", "F", "outer", "top-k", "GB sent", "link s", "exposed s", "util lock",
                "util sized", "token eff", "days lock", "days sized", "cost"):
        table.add_column(col, justify="left" if col in ("strategy", "outer") else "right")
    for c in shown:
        ddp = c["strategy"] == "ddp"
        balance = "sized" if c["balance"] == "proportional" else "lockstep"
        table.add_row(c["strategy"], "1" if ddp else str(c["inner_steps"]),
                      str(c["fragments"]) if c["strategy"] == "streaming" else "-",
                      "gradients" if ddp else f"{c['compression']} {c['exchange']}",
                      f"{c['topk']:g}" if c["topk"] else "-", _num(c["wire_gb"]), _num(c["exchange_s"]), _num(c["exposed_s_per_round"][balance]),
                      f"{c['utilization']['lockstep']:.1%}", f"{c['utilization']['sized']:.1%}",
                      f"{c['token_efficiency']:.3f}", _num(c["days"]["lockstep"]), _num(c["days"]["sized"]),
                      f"${c['cost'][balance] / 1e6:,.1f}M")
    return Group(sites, table)


def _sdc_rows(c: dict) -> list[tuple[str, str]]:
    """Silent corruption: the plan's policy as simulated, then both policies in closed form."""
    mine = c[c["policy"]]
    none, inb = c["none"], c["in_band"]
    even = c["break_even_per_chip_year"]
    pays = ("never" if even == math.inf else "at any rate" if even == 0 else
            f"above {_num(even)} per chip-year" if even is not None and math.isfinite(even) else "-")
    return [
        ("silent corruption", f"{_num(c['per_chip_year'])} per chip-year; policy {c['policy']}: "
                              f"{_num(c['events_mean'])} events simulated ({_num(mine['events'])} expected), "
                              f"caught after {_num(mine['detection_steps'])} steps on average"),
        ("  none vs in_band", f"none {_num(none['lost_days'])} days lost; in_band {_num(inb['lost_days'])} days lost "
                              f"+ {_num(inb['overhead_days'])} days overhead; in_band - none: "
                              f"{c['in_band_minus_none_days']:+.3g} days (closed form); in_band pays off {pays}"),
    ]


def compare_table(rows: list[tuple[str, dict]]) -> Table:
    table = Table(title="tenacia plan compare")
    for col in ("scenario", "layout", "MFU", "failure-free days", "mean days", "p95 days", "goodput",
                "P(deadline)", "band: mean days (low-high rates)", "SDC events, days (lost + overhead)", "cost"):
        table.add_column(col, justify="left" if col in ("scenario", "layout") else "right",
                         max_width=None if col == "scenario" else 13 if col == "layout" else 12)
    for label, s in rows:
        t, sim, exp = s["training"], s["simulation"], s["expected"]
        lay = t["layout"]
        table.add_row(label.replace(", ", ",\n"), f"TP{lay['tp']} CP{lay['cp']} PP{lay['pp']} EP{lay['ep']} DP{lay['dp']}", f"{t['mfu_bf16']:.1%}",
                      _num(t["ideal_days"]), _num(sim["days_mean"]), _num(sim["days_p95"]),
                      f"{sim['goodput_mean']:.1%}", f"{sim['p_by_deadline']:.0%} @ {_num(sim['deadline_days'])} d",
                      f"{_num(s['band']['low']['days_mean'])}-{_num(s['band']['high']['days_mean'])}",
                      _sdc_cell(s["sdc"]), f"${_num(exp['cost'])}")
    return table


def _sdc_cell(c: dict) -> str:
    mine = c[c["policy"]]
    return f"{_num(c['events_mean'])}, {_num(mine['lost_days'] + mine['overhead_days'])}"


def serve_table(s: dict) -> Table:
    table = Table(title="tenacia plan serve", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("instance", f"{s['tp']} x {s['chip']}, batch {s['batch']} (memory allows {s['max_batch_memory']})"),
        ("time per output token", f"{s['step_s'] * 1000:.1f} ms"),
        ("time to first token", f"{s['ttft_s'] * 1000:.0f} ms (one prompt's prefill, no queueing)"),
        ("the step, by operator", _step_parts(s["step_parts"])),
        ("decode", f"{_num(s['decode_tps_per_chip'])} tokens/s per chip"),
        ("prefill", f"{_num(s['prefill_tps_per_chip'])} tokens/s per chip"),
        ("chips for the demand", f"{s['chips']:,} ({s['prefill_chips']:,} prefill + {s['decode_chips']:,} decode"
         + (", prefilling in the decode steps: aggregated)" if "chunk_share" in s["step_parts"] else ")")),
        ("decode vs TPOT target", ", ".join(f"{p['tpot_ms']:g} ms: {_num(p['decode_tps_per_chip'])}" for p in s["curve"])
         + " tokens/s per chip"),
        ("cost", f"${_num(s['cost_per_day'])} per day, ${s['cost_per_million_tokens']:.3g} per million tokens"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _step_parts(p: dict) -> str:
    """Each operator's ms and its bound, then the communication (an all-to-all before overlap, or
    an all-reduce the step waits for) and fixed cost."""
    ops = [k[:-2] for k in p if k.endswith("_s") and f"{k[:-2]}_bound" in p]
    comm = "all-reduce, waited for" if p.get("comm_kind") == "all-reduce" else "all-to-all, before overlap"
    return (", ".join(f"{op} {p[op + '_s'] * 1000:.1f} ({p[op + '_bound']})" for op in ops)
            + f"; communication {p['comm_s'] * 1000:.1f} ({comm}); fixed {p['fixed_s'] * 1000:.1f} ms")


def chips_table(chips: dict[str, Chip]) -> Table:
    table = Table(title="chip catalog (* = uncertain figure; see catalog.toml for sources)")
    cols = ("bf16_tflops", "fp8_tflops", "matmul_efficiency", "memory_gb", "memory_tbs", "scale_up_gbs",
            "scale_up_domain", "scale_out_gbs", "power_w", "price_per_hour", "crash_per_chip_year",
            "host_per_chip_year", "failure_rate_low", "failure_rate_high")
    table.add_column("chip")
    for col in cols:
        table.add_column(col.replace("_per_chip_year", "/chip-yr").replace("failure_rate_", "hw/chip-yr ")
                         .replace("_", " "), justify="right")
    for key, chip in chips.items():
        cells = []
        for col in cols:
            fig = chip.figures.get(col)
            cells.append("-" if fig is None else f"{fig.value:g}{'*' if fig.uncertain else ''}")
        table.add_row(key, *cells)
    return table


def _pct(x: float | None) -> str:
    return "-" if x is None else "cannot plan" if not math.isfinite(x) else f"{x:.1%}"


def validation_table(s: dict) -> Table:
    """One row per case, grouped by set, then each set's summary (``validation.summarize``): the
    median and largest |error| and how many are over the bar, over point cases only; how many
    lower bounds are reached; how many cases meet the per-case bar; how many reliability cases
    hold the published figure inside their failure-rate band. Last, the same over every held-out
    set together, when more than one is shown."""
    table = Table(title="tenacia plan validate (error = predicted / published - 1; met: |error| <= 25%, or "
                        "planned >= published where the source gives a minimum, shown '>=' (<=, '<=', a maximum): a bound "
                        "counts as met or not, never in the median or max)")
    for col in ("set", "case", "kind", "published", "predicted", "error", "met", "failure-rate band", "in band"):
        table.add_column(col, justify="left" if col in ("set", "case", "kind") else "right")
    yes_no = {True: "yes", False: "no", None: ""}
    for name, agg in ((n, a) for n, a in s["sets"].items() if a["cases"]):
        for c in (c for c in s["cases"] if c["set"] == name):
            error = f"{c['error']:+.1%}" if c["error"] is not None else "cannot plan"
            if (c.get("lower_bound") or c.get("upper_bound")) and c["error"] is not None:
                error = f"[dim]bound ({error})[/]"
            band = f"{_num(c['band'][0])} to {_num(c['band'][1])}" if c.get("band") else ""
            published = (">= " if c.get("lower_bound") else "<= " if c.get("upper_bound") else "") + _num(c["published"])
            table.add_row(name, c["id"], c["kind"], published,
                          _num(c["predicted"]) if c["predicted"] is not None else "-", error,
                          yes_no[c.get("met")], band, yes_no[c.get("in_band")])
        _summary_rows(table, name, agg)
    unplanned = [f"{c['id']}: {c['problem']}" for c in s["cases"] if c["predicted"] is None and c.get("problem")]
    if unplanned:
        table.caption = "cannot plan: " + " | ".join(unplanned)
    held = s.get("held_out_pooled")
    if held and held["cases"] and sum(1 for n, a in s["sets"].items() if n != "tuning" and a["cases"]) > 1:
        _summary_rows(table, "held-out, pooled", held)
    return table


def _summary_rows(table: Table, name: str, agg: dict) -> None:
    """A summary line for ``agg`` and one per kind in it."""
    def line(label: str, a: dict, bold: bool) -> tuple[str, ...]:
        points = f"{_pct(a['median_abs_error'])} (max {_pct(a['max_abs_error'])})"
        over = f"{a['over_bar']} of {a['points']} over 25%" + (f"; bounds {a['bounds_met']} of {a['bounds']} met"
                                                               if a["bounds"] else "")
        return (name, f"[bold]{label}[/]" if bold else label, "", "", "median |error|",
                f"[bold]{points}[/]" if bold else points, f"{a['met']} of {a['cases']}", over, _banded(a))

    table.add_row(*line(f"{agg['planned']} of {agg['cases']} planned", agg, True))
    kinds = list(agg["kinds"])
    for kind in kinds:
        k = agg["kinds"][kind]
        table.add_row(*line(f"  {kind}: {k['planned']} of {k['cases']}", k, False), end_section=kind == kinds[-1])


def _banded(agg: dict) -> str:
    """'k of n' reliability cases inside their band, or nothing when no case has one."""
    return f"{agg['in_band']} of {agg['banded']} inside" if agg["banded"] else ""
