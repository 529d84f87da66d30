"""Wrong numbers (issue 14, "Speed"): tenacia's in-band numeric checks against plain DDP and
torchft-nightly on the same schedule, the checks' cost, the detection latency of small
corruptions against the audit probability p, and the false-alarm count of clean runs.

    .venv/bin/python bench/numeric_faults.py                         # overhead, schedule, latency
    .venv/bin/python bench/numeric_faults.py --sections clean --clean-steps 10000 --clean-replicas 4

Sections (each prints a table; all results go to bench/results/numeric_faults-<time>.json):
- ``overhead``: tenacia, no faults, with ``numerics.check`` off, on with ``audit_p = 0``, and on
  with ``audit_p = 1/32``, in interleaved rounds: median step time against the run without checks.
- ``schedule``: every arm once without faults and once with the schedule: an exponent flip (bit
  30) in one replica's local gradient every ``--flip-every`` steps (replicas in turn) and one
  lemon (replica 2's local gradient flipped the same way at every step from ``--lemon-at``).
  tenacia gets it as ``[chaos]`` entries (``sdc:R@S:local_grads:exponent``); the peers' workers
  (bench/peers) flip the same bit of their local gradient before DDP averages it. Columns: final
  eval loss without and with faults, whether every final weight and optimizer tensor is finite
  (an overflowed AdamW moment freezes its weight for good, whatever the loss says), whether the
  run recovered (state finite, loss within 5% of its own fault-free loss), steps lost (tenacia: steps discarded and redone or skipped; peers: steps
  trained after the first non-finite loss), the verdicts, and how many steps after its first
  wrong number the lemon was evicted. ``tenacia-nocheck`` is tenacia with the checks off: the
  same pipeline averaging every gradient, as DDP and torchft do. Eval losses are comparable
  within an arm only (tenacia trains its own tokenizer's data, the peers byte tokens).
- ``latency``: a plausible corruption (a high mantissa bit, ``mantissa_high``) in replica 1's
  local gradient at every step from step 20, for each p and seed: steps until its first trigger
  and until its eviction (an audit finds it as the audited share or as the auditor: expected
  about R / 2p steps); and, in a run of their own, ``--transients`` single plausible flips in
  replica 0 (one every WATCH_STEPS + 4 steps, so a catch's watch is over before the next): the
  fraction a sampled recomputation caught (expected p / R).
- ``clean``: fault-free runs; every ``numeric_trigger``, verdict and eviction counted (false alarms).

The peers run from their own venv (bench/.venvs/torchft, made by bench/faults.py); torchrun from
the project's.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
sys.path[:0] = [str(ROOT), str(PEERS), str(ROOT / "bench")]

from arms import Procs, lighthouse_port, records  # noqa: E402
from faults import ensure_torchft_venv, worker_env  # noqa: E402
from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

from tenacia.device import cpu_model  # noqa: E402,F401  (slow_links.py imports it from here)
from tenacia.train.numerics.judge import WATCH_STEPS  # noqa: E402

ARMS = ("tenacia", "tenacia-nocheck", "ddp", "torchft")


def tenacia_run(out: Path, a: argparse.Namespace, steps: int, replicas: int, faults: list[str],
                numerics: dict[str, Any]) -> dict[str, Any]:
    """``tenacia train`` to the end; the run's events and its final eval loss."""
    run = out / "run"
    subprocess.run(["rm", "-rf", str(run)], check=True)
    out.mkdir(parents=True, exist_ok=True)
    overrides = [f"model.preset={a.preset}", f"data.seq_len={a.seq_len}", f"train.steps={steps}",
                 f"train.batch_size={a.batch * replicas}", f"train.micro_batch_size={a.batch}",
                 "train.eval_every=0", "train.eval_batches=8", "train.progress=false", "device.threads=1",
                 "checkpoint.every=0", f"replicas.count={replicas}", f"chaos.faults={json.dumps(faults)}",
                 "optim.warmup_steps=10", *(f"numerics.{k}={v}" for k, v in numerics.items())]
    cmd = [sys.executable, "-m", "tenacia", "train", "--run-dir", str(run)]
    for o in overrides:
        cmd += ["-o", o]
    t0 = time.time()
    with open(out / "launcher.log", "wb") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=a.timeout).returncode
    events = records(run / "events.jsonl")
    finished = run / "finished.json"
    loss, finite = math.nan, None
    if finished.exists():
        done = json.loads(finished.read_text())
        loss = done["eval_loss"]
        from safetensors.torch import load_file

        tensors = [t for f in ("model.safetensors", "optimizer.safetensors")
                   for t in load_file(str(Path(done["checkpoint"]) / f)).values()]
        finite = all(bool(t.float().isfinite().all()) for t in tensors)
    return {"code": code, "wall_s": time.time() - t0, "events": events, "eval_loss": loss, "finite_state": finite}


def step_time(events: list[dict[str, Any]], skip: int = 10) -> float | None:
    times = [e["step_time_s"] for e in events if e["event"] == "step_committed" and e["step"] > skip
             and e.get("step_time_s")]
    return statistics.median(times) if times else None


def peer_run(arm: str, out: Path, a: argparse.Namespace, steps: int, corrupt: list[dict[str, Any]]) -> dict[str, Any]:
    """One peer arm to ``steps``; its eval loss (replica 0's) and the steps after a non-finite loss."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "workers.jsonl"
    log.unlink(missing_ok=True)
    env = worker_env(log, time.time() + a.timeout)
    env.update(BENCH_STEPS=str(steps), BENCH_CORRUPT=json.dumps(corrupt))
    workload = ["--preset", a.preset, "--seq-len", str(a.seq_len), "--batch", str(a.batch)]
    procs = Procs(out)
    t0 = time.time()
    try:
        if arm == "ddp":
            procs.start("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                str(a.replicas), str(PEERS / "ddp_worker.py"), *workload], env).wait(a.timeout)
        else:
            venv = ensure_torchft_venv()
            procs.start("lighthouse", [str(venv / "bin" / "torchft_lighthouse"), "--min_replicas", str(a.replicas),
                                       "--bind", "[::]:0", "--join_timeout_ms", "1000"], env)
            env["TORCHFT_LIGHTHOUSE"] = f"http://localhost:{lighthouse_port(out / 'lighthouse.log')}"
            workers = [procs.start(f"replica{r}", [str(venv / "bin" / "python"), str(PEERS / "torchft_worker.py"),
                                                   "--replica", str(r), "--replicas", str(a.replicas), *workload], env)
                       for r in range(a.replicas)]
            for w in workers:
                w.wait(a.timeout)
    finally:
        procs.stop(log)
    recs = records(log)
    evals = [r for r in recs if r.get("event") == "worker_eval"]
    steps0 = [r for r in recs if r.get("event") == "worker_step" and r["replica"] == 0]
    bad = [r["step"] for r in steps0 if not math.isfinite(r["loss"])]
    return {"wall_s": time.time() - t0, "eval_loss": evals[-1]["eval_loss"] if evals else math.nan,
            "finite_state": evals[-1].get("finite_state") if evals else None,
            "steps": max((r["step"] for r in steps0), default=0),
            "lost": max(r["step"] for r in steps0) - bad[0] + 1 if bad else 0,
            "errors": [r["error"] for r in recs if r.get("event") == "worker_error"]}


def schedule(a: argparse.Namespace) -> tuple[list[str], list[dict[str, Any]]]:
    flips = [(k * a.flip_every, (k - 1) % a.replicas) for k in range(1, a.steps // a.flip_every + 1)
             if k * a.flip_every < a.steps]
    tenacia = [f"sdc:{r}@{s}:local_grads:exponent" for s, r in flips]
    peers = [{"replica": r, "step": s, "bits": "exponent"} for s, r in flips]
    if a.lemon_at:
        tenacia.append(f"sdc:2@{a.lemon_at}:local_grads:exponent:every")
        peers.append({"replica": 2, "step": a.lemon_at, "bits": "exponent", "every": True})
    return tenacia, peers


def verdicts(events: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        if e["event"] == "numeric_verdict":
            out[e["verdict"]] = out.get(e["verdict"], 0) + 1
    return out


def section_overhead(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    modes = {"off": {"check": "false"}, "on, p=0": {"check": "true", "audit_p": 0.0},
             "on, p=1/32": {"check": "true", "audit_p": 1 / 32}}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for rnd in range(a.rounds):
        for mode, numerics in modes.items():
            r = tenacia_run(out / f"overhead-{rnd}-{mode.replace(' ', '').replace(',', '-').replace('/', '_')}", a,
                            a.overhead_steps, a.replicas, [], numerics)
            t = step_time(r["events"])
            if t:
                times[mode].append(t)
    base = statistics.median(times["off"]) if times["off"] else None
    rows = {m: {"step_s": statistics.median(v) if v else None, "rounds": v,
                "vs_off": statistics.median(v) / base if v and base else None} for m, v in times.items()}
    print("\noverhead (no faults; median step time, ratio to checks off)")
    for m, r in rows.items():
        print(f"  {m:<12} {r['step_s'] or float('nan'):.4f} s   x{r['vs_off'] or float('nan'):.3f}")
    return rows


def section_schedule(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    tenacia_faults, peer_faults = schedule(a)
    rows = {}
    for arm in a.arms:
        row: dict[str, Any] = {}
        for label, faulty in (("clean", False), ("faults", True)):
            d = out / f"{arm}-{label}"
            if arm.startswith("tenacia"):
                numerics = {"check": "false"} if arm == "tenacia-nocheck" else {}
                r = tenacia_run(d, a, a.steps, a.replicas, tenacia_faults if faulty else [], numerics)
                ev = r.pop("events")
                r.update(lost=sum(1 for e in ev if e["event"] == "step_discarded"), verdicts=verdicts(ev))
                evict = [e["step"] for e in ev if e["event"] == "replica_evicted"]
                r["lemon_evicted_after"] = evict[0] - a.lemon_at if evict and a.lemon_at else None
            else:
                r = peer_run(arm, d, a, a.steps, peer_faults if faulty else [])
            row[label] = r
        clean, bad = row["clean"]["eval_loss"], row["faults"]["eval_loss"]
        row["recovered"] = bool(math.isfinite(bad) and math.isfinite(clean) and bad <= 1.05 * clean
                                and row["faults"]["finite_state"])
        rows[arm] = row
    print(f"\nschedule: an exponent flip every {a.flip_every} steps, a lemon from step {a.lemon_at} ({a.steps} steps)")
    print(f"  {'arm':<16}{'eval clean':>11}{'eval faults':>12}{'state finite':>13}{'recovered':>10}{'steps lost':>11}"
          "  verdicts / lemon")
    for arm, row in rows.items():
        f = row["faults"]
        extra = (f"{f.get('verdicts')} / evicted {f.get('lemon_evicted_after')} steps after"
                 if arm == "tenacia" else "")
        print(f"  {arm:<16}{row['clean']['eval_loss']:>11.4f}{f['eval_loss']:>12.4f}{str(f['finite_state']):>13}"
              f"{str(row['recovered']):>10}"
              f"{f['lost']:>11}  {extra}")
    return rows


def section_latency(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    rows = {}
    for p in a.p:
        runs = []
        for seed in range(a.seeds):  # a lemon alone
            steps = min(a.latency_cap, 20 + int(3 * a.replicas / p))
            r = tenacia_run(out / f"latency-p{p:g}-s{seed}", a, steps, a.replicas,
                            ["sdc:1@20:local_grads:mantissa_high:every"], {"audit_p": p, "seed": seed})
            ev = r["events"]
            first = [e["step"] for e in ev if e["event"] == "numeric_trigger" and 1 in (e["suspect"], e["auditor"])]
            evict = [e["step"] for e in ev if e["event"] == "replica_evicted" and e["replica"] == 1]
            runs.append({"seed": seed, "steps": steps, "first_trigger": first[0] - 20 if first else None,
                         "evicted": evict[0] - 20 if evict else None})
        # transient flips alone (no lemon here), each after the watch that a catch starts is over:
        # a replica caught is audited on every step for WATCH_STEPS, which would catch the next
        # flips for sure and inflate the rate of independent ones
        gap = WATCH_STEPS + 4
        transients = list(range(20, 20 + gap * a.transients, gap))
        r = tenacia_run(out / f"transients-p{p:g}", a, transients[-1] + 3, a.replicas,
                        [f"sdc:0@{s}:local_grads:mantissa_high" for s in transients], {"audit_p": p})
        caught = {e["step"] for e in r["events"] if e["event"] == "numeric_trigger" and e["suspect"] == 0}
        hit = [x["evicted"] for x in runs if x["evicted"] is not None]
        rows[f"{p:g}"] = {"runs": runs, "evicted_median_steps": statistics.median(hit) if hit else None,
                          "evicted_in": f"{len(hit)}/{len(runs)}", "transients": len(transients),
                          "transient_rate": len(caught & set(transients)) / len(transients),
                          # the lemon is drawn as the audited share or as the auditor: 2 in R each audit
                          "expected_steps": a.replicas / (2 * p), "expected_transient_rate": p / a.replicas}
    print("\nlatency of a plausible corruption (mantissa_high) against the audit probability p")
    print(f"  {'p':>8}{'lemon evicted after (median steps)':>36}{'expected R/2p':>14}{'transients caught':>19}"
          f"{'expected p/R':>14}")
    for p, r in rows.items():
        print(f"  {p:>8}{str(r['evicted_median_steps']) + ' (' + r['evicted_in'] + ')':>36}{r['expected_steps']:>14.0f}"
              f"{r['transient_rate']:>19.3f}{r['expected_transient_rate']:>14.3f}")
    draw_latency(rows, a.replicas, Path(a.figure) if a.figure else out / "latency.png")
    return rows


def draw_latency(rows: dict[str, Any], replicas: int, path: Path) -> None:
    """Detection latency of a persistent plausible corruption, and the share of transient ones
    caught, against p (every seed's eviction as a point, the expectation as a line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = sorted(float(p) for p in rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for p in ps:
        hits = [x["evicted"] for x in rows[f"{p:g}"]["runs"] if x["evicted"] is not None]
        left.scatter([p] * len(hits), hits, color="tab:blue", s=18, zorder=3)
    left.plot(ps, [replicas / (2 * p) for p in ps], color="gray", ls="--", label=f"expected {replicas}/(2p)")
    left.set(xscale="log", yscale="log", xlabel="audit probability p per step",
             ylabel="steps to eviction", title="a lemon: mantissa flips every step")
    left.legend()
    right.plot(ps, [rows[f"{p:g}"]["transient_rate"] for p in ps], "o-", label="measured")
    right.plot(ps, [p / replicas for p in ps], color="gray", ls="--", label=f"expected p/{replicas}")
    right.set(xscale="log", xlabel="audit probability p per step", ylabel="share caught",
              title="single transient mantissa flips")
    right.legend()
    for ax in (left, right):  # p as fractions, no minor log labels over each other
        ax.set_xticks(ps, [f"1/{round(1 / p)}" if p < 1 else "1" for p in ps])
        ax.minorticks_off()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def section_clean(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    r = tenacia_run(out / "clean", a, a.clean_steps, a.clean_replicas, [], {})
    ev = r["events"]
    row = {"steps": sum(1 for e in ev if e["event"] == "step_committed"), "replicas": a.clean_replicas,
           "triggers": sum(1 for e in ev if e["event"] == "numeric_trigger"), "verdicts": verdicts(ev),
           "evictions": sum(1 for e in ev if e["event"] == "replica_evicted"), "code": r["code"],
           "wall_s": r["wall_s"]}
    print(f"\nclean: {row['steps']} steps x {a.clean_replicas} replicas: {row['triggers']} triggers, "
          f"verdicts {row['verdicts'] or 'none'}, {row['evictions']} evictions")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", default="overhead,schedule,latency")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--preset", default="micro")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=4, help="samples per replica per step")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--flip-every", type=int, default=100)
    p.add_argument("--lemon-at", type=int, default=150)
    p.add_argument("--overhead-steps", type=int, default=120)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--p", type=lambda s: [1 / float(x[2:]) if x.startswith("1/") else float(x) for x in s.split(",")],
                   default=[1 / 4, 1 / 8, 1 / 16, 1 / 32], help="audit probabilities, e.g. 1/4,1/32")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--latency-cap", type=int, default=400)
    p.add_argument("--transients", type=int, default=40, help="transient flips per p, one every WATCH_STEPS + 4 steps")
    p.add_argument("--figure", default="", help="where the latency figure goes (default: the results folder)")
    p.add_argument("--clean-steps", type=int, default=10000)
    p.add_argument("--clean-replicas", type=int, default=4)
    p.add_argument("--timeout", type=float, default=7200)
    a = p.parse_args()
    a.arms = a.arms.split(",")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"numeric_faults-{stamp}"
    result: dict[str, Any] = {"args": {k: v for k, v in vars(a).items()}}
    sections = {"overhead": section_overhead, "schedule": section_schedule, "latency": section_latency,
                "clean": section_clean}
    for name in a.sections.split(","):
        result[name] = sections[name](a, out)
        path = write_results("numeric_faults", result, ROOT / "bench" / "results" / f"numeric_faults-{stamp}.json",
                             indent=1)
    print(f"\nwrote {path} ({cpu_model()})")


if __name__ == "__main__":
    main()
