"""The issue-15 goals judged from a bench/slow_links.py result, its table in Markdown, and its plot.

    .venv/bin/python bench/slow_links_report.py bench/results/slow_links-<time>.json [--png docs/img/slow_links.png]
        [--also bench/results/slow_links-<other time>.json]   # its link arms join the plot
        [--calibration bench/results/links-calibration.json]   # then: tenacia plan --calibrate-links it

bench/slow_links.py calls ``goals`` and ``plot`` at the end of its run; this script redoes both
from a stored JSON (and prints the Markdown tables that docs/benchmarks.md shows).

The goals, at ``GOAL_RTT_MS`` round trip and ``GOAL_RATE_MBIT`` (issue 15, "Speed"), each judged
for every tenacia low-communication arm of the run:
- utilization: tokens/s over the same run's no-link, no-sync ceiling, >= 95%: the mean of the
  two ceilings measured right before and right after the arm (bench/slow_links.py measures one
  before every arm and one after the last; the text adds the arm's tokens/s over its own at 0 ms
  round trip: on a machine shared with other jobs, the ceiling and the arm may see different
  loads), and over the sum of its members' own compute speeds in
  the run (``of_member_speeds``, drift-free: this guest's speed moved 19% within 3 minutes at
  19:36); met when both are;
- bytes: ddp's bytes per token (same link) over the arm's, >= 1000;
- loss: eval loss at the budget (equal tokens) at most 2% above the target (tenacia ddp's on
  loopback);
- time to target: the best torchft variant's time to the same target (both sides train the same
  workload) over the arm's, >= 1.5. An arm may go on past the budget (``--past``) to reach it; one
  that never does has no time; where no torchft variant does, the ratio has only the lower bound
  ``the longest torchft run's last eval / arm time``;
- quotas: tenacia diloco on the quotas' tokens/s over the sum of the solo tokens/s, >= 90%, and
  over the sum of its members' own speeds in the run (drift-free); met when both are;
- waits: on the quotas, no member waits more than 10% of a round for the others (a member's wait:
  the round's time less its own compute; judged on each member's median round, its worst round
  shown beside).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

GOAL_RTT_MS, GOAL_RATE_MBIT = 100, 100
LOW_COMM = ("diloco", "diloco-int8", "diloco-int4-topk", "streaming", "streaming-int4", "diloco-overlap", "diloco-eager",
            "streaming-int4-eager", "diloco-spec", "diloco-eager-spec", "diloco-int2-rs", "diloco-spec-int2-rs",
            "diloco-delay-int2-rs",
            *(f"{a}-nc" for a in ("diloco", "diloco-spec", "diloco-eager", "diloco-eager-spec", "streaming-int4",
                                  "diloco-int4-topk")))


def _at_goal(runs: list[dict[str, Any]], arm: str) -> dict[str, Any] | None:
    return next((r for r in runs if r["arm"] == arm and r["rtt_ms"] == GOAL_RTT_MS
                 and r["rate_mbit"] == GOAL_RATE_MBIT and "error" not in r), None)


def _last_eval_s(r: dict[str, Any]) -> float:
    """Seconds from the run's first sync to its last eval (its budget's end in an older result)."""
    return r["evals"][-1]["t"] if r.get("evals") else r["seconds"]


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (goal, arm): ``goal``, ``arm``, ``value`` (a number or None), ``text`` (what
    was compared) and ``met`` (True, False, or None where the run has nothing to judge)."""
    out: list[dict[str, Any]] = []
    links = result.get("links")
    if links:
        runs = links["runs"]
        ddp = _at_goal(runs, "ddp")
        target = links.get("target_tenacia")
        torchft = [r for r in (_at_goal(runs, a) for a in ("torchft-diloco", "torchft-streaming", "torchft-localsgd"))
                   if r is not None]
        reached = [r for r in torchft if r["time_to_target_s"] is not None]
        best_tf = min(reached, key=lambda r: r["time_to_target_s"]) if reached else None
        for arm in LOW_COMM:
            r = _at_goal(runs, arm)
            if r is None:
                continue
            util = r["utilization"]
            near = next((x for x in runs if x["arm"] == arm and x["rtt_ms"] == 0 and x["rate_mbit"] == GOAL_RATE_MBIT
                         and "error" not in x), None)
            own = f"; {r['tokens_per_s'] / near['tokens_per_s']:.0%} of its own 0 ms run" if near else ""
            inrun = r.get("of_member_speeds")
            # met when both the ceiling's and the drift-free measure (its members' own speeds) say so
            out.append({"goal": "utilization >= 95%", "arm": arm, "value": util,
                        "text": f"{util:.1%}{own}" + (f"; {inrun:.1%} of its members' own speeds" if inrun else ""),
                        "met": util >= 0.95 and (inrun is None or inrun >= 0.95)})
            if ddp and ddp["bytes_per_token"] and r["bytes_per_token"]:
                ratio = ddp["bytes_per_token"] / r["bytes_per_token"]
                out.append({"goal": ">= 1000x fewer bytes/token than ddp", "arm": arm, "value": ratio,
                            "text": f"{ratio:,.0f}x ({ddp['bytes_per_token']:,.0f} vs {r['bytes_per_token']:,.1f})",
                            "met": ratio >= 1000})
            if target is not None and r["eval_loss"] is not None:
                rel = r["eval_loss"] / target - 1
                out.append({"goal": "eval loss within 2% of ddp", "arm": arm, "value": rel,
                            "text": f"{rel:+.2%} ({r['eval_loss']:.4f} vs {target:.4f})", "met": rel <= 0.02})
            mine = r["time_to_target_s"]
            if mine is None:
                out.append({"goal": ">= 1.5x faster to target than the best torchft", "arm": arm, "value": None,
                            "text": "did not reach the target (within --past times the budget)", "met": False})
            elif best_tf is not None:
                ratio = best_tf["time_to_target_s"] / mine
                out.append({"goal": ">= 1.5x faster to target than the best torchft", "arm": arm, "value": ratio,
                            "text": f"{ratio:.2f}x ({mine:.1f} s vs {best_tf['arm']} {best_tf['time_to_target_s']:.1f} s)",
                            "met": ratio >= 1.5})
            elif torchft:
                bound = max(_last_eval_s(t) for t in torchft) / mine
                out.append({"goal": ">= 1.5x faster to target than the best torchft", "arm": arm, "value": bound,
                            "text": f"no torchft variant reached the target; >= {bound:.2f}x ({mine:.1f} s vs the "
                                    "longest torchft run)", "met": bound >= 1.5})
    quotas = result.get("quotas")
    if quotas:
        for r in quotas["runs"]:
            if "error" in r:
                continue
            util, inrun = r["utilization"], r.get("of_member_speeds")
            out.append({"goal": "quotas: >= 90% of the sum of solo tokens/s", "arm": r["arm"], "value": util,
                        "text": f"{util:.1%} ({r['tokens_per_s']:.0f} vs {quotas['sum_solo']:.0f} tokens/s)"
                                + (f"; {inrun:.1%} of its members' own speeds in the run" if inrun else ""),
                        "met": util >= 0.90 and (inrun is None or inrun >= 0.90) if r["arm"] != "ddp" else None})
            w = r.get("waits")
            if w:
                worst = max(x["median"] for x in w.values())
                out.append({"goal": "quotas: no member waits > 10% of a round", "arm": r["arm"], "value": worst,
                            "text": ", ".join(f"r{m} {x['median']:.1%} (worst round {x['max']:.1%})"
                                              for m, x in w.items()),
                            "met": worst <= 0.10 if r["arm"] != "ddp" else None})
    return out


def markdown(result: dict[str, Any]) -> str:
    """The run's tables (links, quotas, goals) in Markdown."""

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = []
    links = result.get("links")
    if links:
        ceilings = " and ".join(f"{c:,.0f}" for c in links.get("ceilings", []))
        peers = f(links.get("peers_ddp", links.get("target_peers")), ".4f")
        if links.get("reference_at_peers_ddp") is not None and links.get("peers_ddp_tokens") != result["args"]["tokens"]:
            peers += (f" after the budget's first {links['peers_ddp_tokens']:,} tokens (tenacia ddp there: "
                      f"{links['reference_at_peers_ddp']:.4f})")
        lines += [f"Ceiling (no link, no sync): {f(links.get('ceiling_tokens_per_s'), ',.0f')} tokens/s on average "
                  f"(measured before every arm and after the last: {ceilings}; each arm's utilization is over the two "
                  f"either side of it). Target (tenacia ddp): {f(links['target_tenacia'], '.4f')}; the peers' DDP: "
                  f"{peers}.", "",
                  "| round trip | rate | arm | tokens/s | ceilings either side | utilization | of its members' own "
                  "speeds | bytes/token | eval loss | to target (s) | tokens to target | load |",
                  "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in links["runs"]:
            head = f"| {r['rtt_ms']:g} ms | {r['rate_mbit']:g} Mbit/s | {r['arm']} |"
            if "error" in r:
                lines.append(f"{head} {r['error']} | | | | | | | | |")
                continue
            sides = " / ".join(f"{c:,.0f}" for c in r.get("ceilings", [])) or "-"
            lines.append(f"{head} {r['tokens_per_s']:,.0f} | {sides} | {f(r['utilization'], '.1%')} | "
                         f"{f(r.get('of_member_speeds'), '.1%')} | "
                         f"{f(r['bytes_per_token'], ',.1f')} | {f(r['eval_loss'], '.4f')} | "
                         f"{f(r['time_to_target_s'], '.1f')} | {f(r.get('tokens_to_target'), ',')} | "
                         f"{f(r.get('load'), '.1f')} |"
                         + (f" {r['stopped']}" if r.get("stopped") else ""))
    quotas = result.get("quotas")
    if quotas:
        lines += ["", f"CPU quotas {quotas['quotas']}: solo tokens/s "
                  f"{', '.join(f'{s:,.0f}' for s in quotas['solo_tokens_per_s'])} (sum {quotas['sum_solo']:,.0f})."]
        lines += [f"- solos {s['mode']}: {', '.join(f'{x:,.0f}' for x in s['tokens_per_s'])} (sum {s['sum']:,.0f}; "
                  f"load {s['load']:.1f}, steal {s['steal']:.1%})" for s in quotas.get("solos", [])]
        lines += ["",
                  "| arm | tokens/s | of the solo sum | of its members' own speeds in the run | eval loss | "
                  "each member's wait in a round: median (worst), share of the tokens | load |",
                  "|---|---:|---:|---:|---:|---|---:|"]
        for r in quotas["runs"]:
            if "error" in r:
                lines.append(f"| {r['arm']} | {r['error']} | | | | | |")
            else:
                waits = "; ".join(f"r{m} {x['median']:.1%} ({x['max']:.1%}), {x['tokens_share']:.1%}"
                                  for m, x in (r.get("waits") or {}).items()) or "-"
                lines.append(f"| {r['arm']} | {r['tokens_per_s']:,.0f} | {f(r['utilization'], '.1%')} | "
                             f"{f(r.get('of_member_speeds'), '.1%')} | {f(r['eval_loss'], '.4f')} | {waits} | "
                             f"{f(r.get('load'), '.1f')} |")
    rows = goals(result)
    if rows:
        lines += ["", "| goal | arm | measured | met |", "|---|---|---|---|"]
        for g in rows:
            met = {True: "yes", False: "**no**", None: "(lock-step reference)"}[g["met"]]
            lines.append(f"| {g['goal']} | {g['arm']} | {g['text']} | {met} |")
    return "\n".join(lines)


def plot(result: dict[str, Any], png: Path) -> Path | None:
    """Tokens/s and final eval loss against round trip, one line per arm and rate (the ceiling
    dashed); None when the run has no links section."""
    links = result.get("links")
    if not links:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (speed, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    keys = sorted({(r["arm"], r["rate_mbit"]) for r in links["runs"]}, key=str)
    for arm, rate in keys:
        pts = sorted((r["rtt_ms"], r) for r in links["runs"]
                     if r["arm"] == arm and r["rate_mbit"] == rate and "error" not in r)
        if not pts:
            continue
        label = arm if len({k[1] for k in keys}) == 1 else f"{arm} {rate:g} Mbit/s"
        style = "--" if arm.startswith("torchft") else "-"
        xs = [x for x, _ in pts]
        speed.plot(xs, [r["tokens_per_s"] for _, r in pts], style, marker="o", label=label)
        loss.plot(xs, [r["eval_loss"] for _, r in pts], style, marker="o", label=label)
    speed.axhline(links["ceiling_tokens_per_s"], color="grey", linestyle=":", label="ceiling (no link, no sync)")
    speed.set(xlabel="round trip (ms)", ylabel="tokens/s (all replicas)", title="throughput", ylim=(0, None))
    loss.set(xlabel="round trip (ms)", ylabel="eval loss at equal tokens",
             title="eval loss at the budget (one workload)")
    speed.legend(fontsize=7)
    loss.legend(fontsize=7)
    fig.suptitle(f"bench/slow_links.py, {result.get('date', '')}: {result['args']['replicas']} replicas, "
                 f"{result['args']['tokens']:,} tokens each arm", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def collective(arm: str, compression: str) -> str:
    """The form an arm's exchange takes on the wire, in ``tenacia/plan/links.py``'s names: ddp's
    gloo ring; the compressed exchange's direct all-gather (one one-way trip) or, for the ``-rs``
    arms, its direct reduce-scatter (two); fp32 over the streams transport a direct reduce-scatter
    then all-gather (two: every fp32 exchange of the bench is above its small-message size)."""
    if arm.startswith("ddp"):
        return "ring_allreduce"
    if arm.endswith("-rs") or compression == "fp32" and "topk" not in arm:
        return "reduce_scatter"
    return "allgather"


def calibration(result: dict[str, Any]) -> dict[str, Any] | None:
    """The run's tenacia arms at the goal's link in the schema of ``tenacia plan --calibrate-links``
    (``tenacia/plan/calibrate.py``): tokens/s with the link against the same arm at 0 ms round trip
    (ddp: against its loopback reference), bytes and exchanges per token. An arm faster behind the
    link than without it (noise) says nothing of the link and is left out. None without one."""
    links = result.get("links")
    if not links:
        return None
    a = result["args"]
    round_tokens = a["replicas"] * a["batch"] * a["seq_len"]
    arms = []
    for r in links["runs"]:
        if r["arm"].startswith("torchft") or r["rtt_ms"] != GOAL_RTT_MS or r["rate_mbit"] != GOAL_RATE_MBIT \
                or "error" in r:
            continue
        near = (links.get("reference") if r["arm"] == "ddp" else
                next((x for x in links["runs"] if x["arm"] == r["arm"] and x["rtt_ms"] == 0
                      and x["rate_mbit"] == GOAL_RATE_MBIT and "error" not in x), None))
        if not near or r["tokens_per_s"] > near["tokens_per_s"]:
            continue
        strategy = r["arm"].split("-")[0]
        per_exchange = round_tokens * (1 if strategy == "ddp" else a["inner_steps"])
        compression = next((c for c in ("int2", "int4", "int8") if c in r["arm"]), "fp32")
        arms.append({"strategy": strategy, "compression": compression, "collective": collective(r["arm"], compression),
                     "inner_steps": 1 if strategy == "ddp" else a["inner_steps"],
                     "tokens_per_s": r["tokens_per_s"], "tokens_per_s_no_link": near["tokens_per_s"],
                     "bytes_per_token": r["bytes_per_token"], "exchanges_per_token": 1 / per_exchange,
                     "utilization": r["utilization"]})
    if not arms:
        return None
    return {"link": {"rtt_ms": GOAL_RTT_MS, "gbit_s": GOAL_RATE_MBIT / 1000}, "members": a["replicas"], "arms": arms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("result", type=Path)
    p.add_argument("--png", type=Path, help="write the plot here")
    p.add_argument("--also", type=Path, action="append", default=[],
                   help="another result of the same code (other round trips): its link arms join the plot")
    p.add_argument("--calibration", type=Path, help="write the planner's link calibration here "
                   "(tenacia plan --calibrate-links)")
    a = p.parse_args()
    result = json.loads(a.result.read_text())
    print(markdown(result))
    if a.png:
        both = {**result, "links": {**result["links"], "runs": [*result["links"]["runs"], *(
            r for other in a.also for r in json.loads(other.read_text())["links"]["runs"])]}}
        print(f"wrote {plot(both if a.also else result, a.png)}")
    if a.calibration:
        cal = calibration(result)
        if cal is None:
            print("no tenacia arm at the goal's link to calibrate from")
        else:
            a.calibration.write_text(json.dumps(cal, indent=1))
            print(f"wrote {a.calibration}")


if __name__ == "__main__":
    main()
