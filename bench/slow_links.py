"""Slow links and mixed chips (issue 15, "Speed"): tenacia's sync strategies against torchft's
DiLoCo and LocalSGD on an emulated link, side by side in one run, and replicas of different speeds.

    .venv/bin/python bench/slow_links.py            # 0 and 100 ms round trip at 100 Mbit/s (about 35 min, 2 cores)
    .venv/bin/python bench/slow_links.py --full     # 0, 10, 50, 100, 200 ms at 100 Mbit/s and 1 Gbit/s
    .venv/bin/python bench/slow_links.py --sections quotas

Every arm trains ``--replicas`` replicas of the same preset on the same token budget (default: 8
outer rounds of H = 100), each replica in a network namespace of its own behind the project's TUN
forwarder (``tenacia chaos link`` for tenacia, ``LinkLab`` directly for torchft), which holds every
packet half the round trip and counts the bytes each node sends; ``tbf`` caps each node's sending
rate. How each arm runs: ``slow_links_arms.py``.

Sections (one table each; all results go to bench/results/slow_links-<time>.json):
- ``links``: with no link, the compute ceiling (``--replicas`` single-process runs at once, no
  sync: the same processes on the same cores), measured right before every arm and after the
  last (the machine drifts: each arm is judged against the two either side of it), and first the
  references: tenacia's ddp, whose eval
  loss at the budget is every arm's target, fixed before any arm runs, and the peers' DDP
  (bench/peers/ddp_worker.py), which must come out the same (``--peers-ddp-tokens``: on the
  budget's first tokens only, against tenacia ddp's eval there): the peers train tenacia's workload,
  written out by ``slow_links_workload.py`` (its samples in its order, its eval windows, model
  seed, AdamW, schedule and clipping), so the same model, data and seeds. Each arm's inner
  learning rate and outer step are chosen per strategy on a probe (``slow_links_tune.py``, other
  seeds; ``--settings``: another budget's file, e.g. ``slow_links_settings_16x.json``, named in
  the JSON with the settings each arm ran) and a torchft arm takes those of the tenacia arm it
  mirrors (``slow_links_settings.py``). ``--reference-from``: tenacia's ddp is taken from an
  earlier result of the same workload and ddp settings instead of trained again (9 minutes at 16x
  the budget; ddp's bits depend on neither link nor time, and the ddp arm behind the link checks
  its evals against it bit for bit). Then for each
  rate and round trip, each arm: tokens/s, compute utilization (tokens/s over the ceiling), bytes
  per token sent (at the forwarder), eval loss at the budget (equal tokens), the time to the
  target loss (from the first committed step; evals every ``--eval-every`` tokens' worth of
  steps; an arm goes on past the budget, to ``--past`` times it, until it reaches the target, its
  schedule still the budget's), and each member's wait in a round.
  ddp behind a link trains only the first ``--ddp-link-tokens`` of the budget (at 100 ms it runs
  at a twentieth of the others' speed): its tokens/s and bytes/token are its steady steps', its
  eval loss at the budget is the reference's (ddp's bits do not depend on the link: the bench
  checks every eval both runs made).
- ``quotas``: replicas on CPU quotas (``--quotas``, cgroups): each quota's solo tokens/s (the four
  at once, before and after the replicas: ``slow_links_quotas.py``), then tenacia diloco (the whole
  budget) and ddp (``--ddp-link-tokens``) with every replica on its quota: tokens/s over the sum
  of the solos, and each member's wait in a round (the round's time less its own compute, from
  ``step_committed``'s ``compute_s``) with its share of the tokens.

torchft runs from its own venv (bench/.venvs/torchft, made by bench/faults.py). Its quantized
exchange imports Triton, absent from a CPU install of torch: the torchft arms run fp32 (the worker
refuses ``--quantize`` rather than fall back silently).

The goals of the issue are judged, the Markdown tables printed and the plot (tokens/s and eval loss
against round trip) drawn by bench/slow_links_report.py, which redoes them from a stored JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
sys.path[:0] = [str(ROOT), str(PEERS), str(ROOT / "bench")]

from numeric_faults import cpu_model  # noqa: E402
from results_file import write_results  # noqa: E402
from slow_links_arms import (  # noqa: E402
    TENACIA_ARMS,
    TORCHFT_ARMS,
    TORCHFT_AS,
    TORCHFT_FP32,
    TWINS,
    ceiling_run,
    metrics,
    peers_reference,
    tenacia_common,
    tenacia_run,
    tenacia_steps,
    torchft_run,
)
from slow_links_quotas import section_quotas  # noqa: E402
from slow_links_report import goals, markdown, plot  # noqa: E402
from slow_links_settings import SETTINGS, SETTINGS_FILE, settings_overrides, use_settings  # noqa: E402
from slow_links_workload import write_workload  # noqa: E402

# diloco-int8 and streaming (fp32) run on --arms: int8 trained as fp32 did (docs/benchmarks.md)
# torchft-localsgd runs on --arms: it never beat torchft's DiLoCo to the target (docs/benchmarks.md)
DEFAULT_ARMS = ("ddp", "diloco", "diloco-spec", "diloco-eager-spec", "streaming-int4", "diloco-int4-topk",
                "torchft-diloco")
DDP_NOTE = ("ddp over a link trains the first --ddp-link-tokens of the budget only (its tokens/s and bytes/token are "
            "those of its steady steps); its eval loss at the budget is the reference's: ddp's bits do not depend on "
            "the link (checked on every eval both runs made)")


def row(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{name:<22} {r['error']}"

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return (f"{name:<22} {f(r['tokens_per_s'], '9.0f')} {f(r['utilization'], '7.1%')} "
            f"{f(r['bytes_per_token'], '11.1f')} {f(r['eval_loss'], '8.4f')} {f(r['time_to_target_s'], '9.1f')}")


HEADER = f"{'arm':<22} {'tokens/s':>9} {'util':>7} {'bytes/token':>11} {'eval':>8} {'to target':>9}"


def wait_line(r: dict[str, Any]) -> str:
    """Each member's wait in a round (median, worst) and its share of the tokens."""
    w = r.get("waits")
    if not w:
        return ""
    return "    waits in a round (median/worst, token share): " + ", ".join(
        f"r{m} {x['median']:.0%}/{x['max']:.0%} ({x['tokens_share']:.0%})" for m, x in w.items())


def ddp_over_link(a: argparse.Namespace, where: Path, rtt: float, rate: float, ref: dict[str, Any],
                  ceiling: float) -> dict[str, Any]:
    """ddp behind the link on the first ``a.ddp_link_tokens`` of the budget (``DDP_NOTE``)."""
    r = tenacia_run("ddp", a, where, rtt, rate, None, ceiling, tokens=a.ddp_link_tokens)
    if "error" in r:
        return r
    both = [(v, ref["evals_by_step"][k]) for k, v in ((e["step"], e["eval_loss"]) for e in r.pop("evals"))
            if k in ref["evals_by_step"]]
    return {**r, "eval_loss": ref["eval_loss"], "time_to_target_s": None, "tokens_run": a.ddp_link_tokens,
            "evals_compared": len(both), "same_bits_as_reference": all(x == y for x, y in both) if both else None}


# what must be equal for an earlier run's loopback ddp to be this run's (``--reference-from``)
SAME_REFERENCE = ("replicas", "preset", "seq_len", "batch", "tokens", "eval_every", "eval_batches")


def stored_reference(a: argparse.Namespace) -> dict[str, Any]:
    """tenacia ddp on loopback from an earlier result (``--reference-from``, its JSON beside its
    directory): ddp's bits depend on neither the link nor the time, so its target is this run's
    when the workload and ddp's settings are; the ddp arm behind the link checks its evals against
    these bit for bit (``same_bits_as_reference``). SystemExit when they differ."""
    path = a.reference_from
    stored = json.loads(path.with_suffix(".json").read_text())
    differ = [k for k in SAME_REFERENCE if stored["args"][k] != getattr(a, k)]
    if differ or stored["settings"]["ddp"] != SETTINGS["ddp"]:
        raise SystemExit(f"--reference-from {path}: other {differ or 'ddp settings'} than this run")
    ref = dict(stored["links"]["reference"])
    _, evals = metrics(path / "links" / "ref-tenacia" / "run")
    ref["evals_by_step"] = {e["step"]: e["eval_loss"] for e in evals}
    if ref["evals_by_step"].get(max(ref["evals_by_step"])) != ref["eval_loss"]:
        raise SystemExit(f"--reference-from {path}: its run directory's last eval is not its JSON's")
    return ref


def section_links(a: argparse.Namespace, out: Path, save: Any) -> dict[str, Any]:
    """The links section (module docstring). Other jobs share this machine's cores and the guest's
    own speed drifts (a ceiling moved 29% within 83 s): the ceiling is measured right before every
    arm and once after the last, and each arm's utilization is its tokens/s over the mean of the
    two ceilings either side of it (``ceilings`` in its row; the live line uses the one before)."""
    ceilings: list[float] = []

    def ceiling() -> float:
        ceilings.append(ceiling_run(a, out / f"ceiling-{len(ceilings)}"))
        return ceilings[-1]

    res: dict[str, Any] = {"ceilings": ceilings, "ddp_note": DDP_NOTE}
    if a.reference_from:
        ref = stored_reference(a)
        res["reference_from"] = str(a.reference_from)
    else:
        ref = tenacia_run("ddp", a, out / "ref-tenacia", None, 0, None, None)
        ref["evals_by_step"] = {e["step"]: e["eval_loss"] for e in ref.pop("evals", [])}
    res["target_tenacia"] = ref.get("eval_loss")
    res["reference"] = {k: v for k, v in ref.items() if k != "evals_by_step"}
    torchft = [x for x in a.arms if x in TORCHFT_ARMS]
    a.workload = out / "workload.pt"
    res["workload_optim"] = write_workload([*tenacia_common(a), *settings_overrides("ddp"),
                                            *tenacia_steps("ddp", a, a.past)],
                                           round(a.tokens * a.past) // a.seq_len, a.workload)
    res["peers_ddp"] = peers_reference(a, out / "ref-peers", a.peers_ddp_tokens) if torchft else None
    res["peers_ddp_tokens"] = a.peers_ddp_tokens
    # the check's other side: tenacia ddp's eval at the peers' last step (the target where that is the budget)
    res["reference_at_peers_ddp"] = ref["evals_by_step"].get(a.peers_ddp_tokens // (a.replicas * a.batch * a.seq_len))
    print(f"target (tenacia ddp) {res['target_tenacia']}; the peers' DDP on the same workload {res['peers_ddp']} "
          f"after {a.peers_ddp_tokens:,} tokens (tenacia ddp there: {res['reference_at_peers_ddp']})")
    if torchft:
        res["torchft_note"] = TORCHFT_FP32
        print(TORCHFT_FP32, flush=True)
    res["runs"] = []
    for rate in a.rates:
        for rtt in a.rtts:
            print(f"\n{rtt:g} ms round trip, {rate:g} Mbit/s (utilization: over the ceiling measured just before)\n"
                  f"{HEADER}", flush=True)
            for arm in a.arms:
                where = out / f"{arm}-{rate:g}mbit-{rtt:g}ms"
                before = ceiling()
                load = os.getloadavg()[0]
                if arm in TORCHFT_ARMS:
                    r = torchft_run(arm, a, where, rtt, rate, res["target_tenacia"], before)
                elif arm == "ddp" and a.ddp_link_tokens < a.tokens:
                    r = ddp_over_link(a, where, rtt, rate, ref, before)
                else:
                    r = tenacia_run(arm, a, where, rtt, rate, res["target_tenacia"], before)
                res["runs"].append({"arm": arm, "rtt_ms": rtt, "rate_mbit": rate, "load": load,
                                    "load_after": os.getloadavg()[0], "ceiling_index": len(ceilings) - 1, **r})
                save(res)  # what ran so far survives a run stopped early
                print(row(arm, r) + ("\n" + wait_line(r) if r.get("waits") else ""), flush=True)
    ceiling()
    res["ceiling_tokens_per_s"] = statistics.mean(ceilings)
    for r in res["runs"]:
        i = r.pop("ceiling_index")
        r["ceilings"] = ceilings[i:i + 2]
        if "error" not in r:
            r["utilization"] = r["tokens_per_s"] / statistics.mean(r["ceilings"])
    print(f"\nceilings (before each arm, then after the last): {', '.join(f'{c:.0f}' for c in ceilings)} tokens/s; "
          "each arm's utilization is over the two either side of it", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="quotas,links", help="quotas first: the shorter section")
    p.add_argument("--full", action="store_true", help="every round trip and both rates")
    p.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                   help=f"of {', '.join([*TENACIA_ARMS, *TORCHFT_ARMS])}")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--preset", default="micro")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="samples per replica per (inner) step")
    p.add_argument("--tokens", type=int, default=1_638_400, help="the token budget of every arm (8 rounds of H = 100)")
    p.add_argument("--inner-steps", type=int, default=100, help="H")
    p.add_argument("--fragments", type=int, default=4, help="streaming: fragments synced in turn")
    p.add_argument("--topk", type=float, default=0.03, help="the -topk arm: the fraction of each block sent")
    p.add_argument("--delay", type=int, default=16,
                   help="the -delay arms: replicas.outer.delay, inner batches trained ahead before the rebase")
    p.add_argument("--rtts", default="0,100", help="round trips in ms (--full: 0,10,50,100,200)")
    p.add_argument("--ddp-link-tokens", type=int, default=204_800,
                   help="ddp over a link (and on quotas) trains this much of the budget only")
    p.add_argument("--peers-ddp-tokens", type=int,
                   help="the peers' DDP (a check that the peers train as tenacia does; with torchft arms) trains this "
                        "much of the budget only, compared with tenacia ddp's eval there (default: the budget)")
    p.add_argument("--settings", type=Path, default=SETTINGS_FILE,
                   help="the arms' learning rates and outer steps, a file of slow_links_settings.json's form "
                        "(a budget's own, e.g. bench/slow_links_settings_16x.json)")
    p.add_argument("--reference-from", type=Path,
                   help="an earlier result's directory (bench/results/slow_links-<time>): its loopback ddp is this "
                        "run's reference and target instead of training it again (the same workload and ddp settings)")
    p.add_argument("--ceiling-tokens", type=int, default=204_800, help="the no-sync ceiling's and the solos' runs")
    p.add_argument("--eval-every", type=int, default=204_800, help="tokens between evals")
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--past", type=float, default=2.0,
                   help="a low-communication arm may go on to this many times the budget to reach the target")
    p.add_argument("--quotas", default="0.5,0.5,0.25,0.125")
    p.add_argument("--solos", default="concurrent",
                   help="how the quotas' solos run: concurrent, alone, or both (the first is the reference)")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--png", type=Path, help="the plot (default: beside the JSON)")
    a = p.parse_args()
    a.arms = [x for x in a.arms.split(",") if x]
    unknown = [x for x in a.arms if x not in TENACIA_ARMS and x not in TORCHFT_ARMS]
    if unknown:
        p.error(f"unknown arms {unknown}; allowed: {', '.join([*TENACIA_ARMS, *TORCHFT_ARMS])}")
    round_tokens = a.replicas * a.batch * a.seq_len * a.inner_steps
    if a.tokens % round_tokens:
        p.error(f"--tokens {a.tokens} must be a multiple of replicas x batch x seq-len x inner-steps = {round_tokens} "
                "(every arm trains the same tokens, in whole rounds)")
    if a.ddp_link_tokens % (a.replicas * a.batch * a.seq_len):
        p.error(f"--ddp-link-tokens must be a multiple of replicas x batch x seq-len = {a.replicas * a.batch * a.seq_len}")
    if a.ddp_link_tokens % a.eval_every:
        p.error("--ddp-link-tokens must be a multiple of --eval-every: the shorter ddp is checked against its reference "
                "at an eval both made")
    a.ddp_link_tokens = min(a.ddp_link_tokens, a.tokens)
    a.peers_ddp_tokens = min(a.peers_ddp_tokens or a.tokens, a.tokens)
    if a.peers_ddp_tokens % a.eval_every and a.peers_ddp_tokens != a.tokens:
        p.error("--peers-ddp-tokens must be a multiple of --eval-every: the peers' DDP is checked against tenacia ddp's "
                "eval there")
    if not a.settings.exists():
        p.error(f"--settings {a.settings}: no such file")
    settings = use_settings(a.settings, TWINS)
    unset = [x for x in ["ddp", *a.arms, *(["diloco"] if "quotas" in a.sections.split(",") else [])]
             if TORCHFT_AS.get(x, x) not in settings]
    if unset:
        p.error(f"--settings {a.settings} has no settings for {sorted(set(unset))} (nor their twins')")
    a.rtts = [0, 10, 50, 100, 200] if a.full else [float(x) for x in a.rtts.split(",")]
    a.rates = [100, 1000] if a.full else [100]
    a.quotas = [float(x) for x in a.quotas.split(",")]
    a.solos = [x for x in a.solos.split(",") if x]
    if not a.solos or any(x not in ("concurrent", "alone") for x in a.solos):
        p.error(f"--solos {a.solos}: concurrent, alone, or both, comma-separated")
    if "quotas" in a.sections.split(",") and len(a.quotas) != a.replicas:
        p.error(f"--quotas has {len(a.quotas)} entries; it needs one per replica ({a.replicas})")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"slow_links-{stamp}"
    result: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(),
                              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                              "settings_file": str(a.settings),
                              "settings": {x: settings[TORCHFT_AS.get(x, x)] for x in dict.fromkeys(["ddp", *a.arms])}}
    path = out.parent / f"slow_links-{stamp}.json"
    for section in a.sections.split(","):

        def save(partial: dict[str, Any], section: str = section) -> None:
            write_results("slow_links", {**result, section: partial}, path, indent=1)

        if section == "quotas":
            result[section] = section_quotas(a, out / section, save, row, wait_line, HEADER)
        else:
            result[section] = section_links(a, out / section, save)
        write_results("slow_links", result, path, indent=1)
    result["goals"] = goals(result)
    write_results("slow_links", result, path, indent=1)
    print(f"\n{markdown(result)}\n\nwrote {path}")
    png = plot(result, a.png or out.parent / f"slow_links-{stamp}.png")
    if png:
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
