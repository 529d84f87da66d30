"""Fault-tolerance comparison (issue 3, "Speed"): the same model, data and fault schedule for
tenacia, torchft-nightly (its Manager with DDP) and torchrun --max-restarts with checkpoint
restart, plus plain gloo DDP for the no-fault step time; the ``tenacia-etcd`` arm (not in the default set)
is tenacia with its leader leases in an etcd the bench starts on loopback (issue 13: the lease's
cost per step).

    .venv/bin/python bench/faults.py                       # everything: ~25 min on 2 cores
    .venv/bin/python bench/faults.py --arms torchft,torchrun --duration 120

Each arm runs without faults (``--nofault-duration`` s, ``--nofault-rounds`` times, arms
interleaved, for the step time and the overhead against plain DDP) and with the schedule (``--duration`` s from the moment every replica
has committed a step): one SIGKILL of a worker every ``--crash-every`` s and one
``--hang-s``-second SIGSTOP every ``--hang-every`` s, replicas taken in turn. Every arm gets its
faults from the outside on the same clock (bench/peers/arms.py): the peers' worker pids come
from their worker logs, tenacia's from ``replicas/r<k>.json`` in its run directory.
``--tenacia-chaos config`` instead hands tenacia the schedule in its own [chaos] section,
seconds turned into steps with its no-fault step time (steps slow down while a replica is
missing, so faults then land later than in the peers' runs).

Every arm is measured by ``tenacia.report`` with the same definitions (goodput, detection,
stall, time back in the quorum); the peers' worker records are first turned into a tenacia
event log (bench/peers/analyze.py). Prints a table and writes bench/results/faults-<time>.json
plus each arm's run directory (events.jsonl, report.json, timeline.png) under bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
sys.path[:0] = [str(ROOT), str(PEERS)]

from analyze import write_run  # noqa: E402
from arms import (  # noqa: E402
    Fault,
    Injector,
    Procs,
    lighthouse_port,
    peer_commits,
    records,
    schedule,
    tenacia_pids,
    wait_full,
    worker_pids,
)
from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

from tenacia.chaos.etcd import EtcdServer  # noqa: E402
from tenacia.report import summary as tenacia_report  # noqa: E402

TORCHFT_VENV = ROOT / "bench" / ".venvs" / "torchft"
ARMS = ("ddp", "tenacia", "torchft", "torchrun", "tenacia-etcd")
DEFAULT_ARMS = ARMS[:4]  # tenacia-etcd: tenacia with its leader leases in an etcd the bench starts


def ensure_torchft_venv() -> Path:
    """bench/.venvs/torchft with torch 2.13.0 (CPU), torchft-nightly without its pinned deps, and
    the OpenTelemetry packages it imports (shared/FACTS.md gives this recipe)."""
    py = TORCHFT_VENV / "bin" / "python"
    if not (TORCHFT_VENV / "bin" / "torchft_lighthouse").exists():
        print(f"creating {TORCHFT_VENV} (about a minute)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(TORCHFT_VENV)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0", "numpy"], check=True)
        subprocess.run(pip + ["--no-deps", "torchft-nightly"], check=True)
        subprocess.run(pip + ["opentelemetry-api>=1.39", "opentelemetry-sdk>=1.39",
                              "opentelemetry-exporter-otlp>=1.39"], check=True)
    return TORCHFT_VENV


def worker_env(log: Path, deadline: float) -> dict[str, str]:
    env = dict(os.environ, BENCH_LOG=str(log), BENCH_DEADLINE=str(deadline), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(PEERS)]))
    return env


def workload_args(a: argparse.Namespace) -> list[str]:
    return ["--preset", a.preset, "--seq-len", str(a.seq_len), "--batch", str(a.batch)]


def run_peer(arm: str, a: argparse.Namespace, out: Path, duration: float, faults: list[Fault]) -> Path:
    """One run of a peer arm; returns its run directory (tenacia event log + report)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "workers.jsonl"
    log.unlink(missing_ok=True)
    procs = Procs(out)
    env = worker_env(log, time.time() + a.startup_timeout + duration + 60)
    t_launch = time.time()
    replicas: dict[int, Any] = {}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(a.replicas),
                "--monitor-interval", "0.1"]  # torchrun from the project's venv
    try:
        if arm == "torchft":
            venv = ensure_torchft_venv()
            lh = procs.start("lighthouse", [str(venv / "bin" / "torchft_lighthouse"), "--min_replicas", "1",
                                            "--bind", "[::]:0", "--heartbeat_timeout_ms", "3000",
                                            "--join_timeout_ms", "1000"], env)
            env["TORCHFT_LIGHTHOUSE"] = f"http://localhost:{lighthouse_port(out / 'lighthouse.log')}"
            if lh.poll() is not None:
                raise RuntimeError(f"torchft_lighthouse exited with code {lh.returncode}; see {out / 'lighthouse.log'}")

            def start_replica(r: int) -> None:
                replicas[r] = procs.start(f"replica{r}", [str(venv / "bin" / "python"), str(PEERS / "torchft_worker.py"),
                                                          "--replica", str(r), "--replicas", str(a.replicas),
                                                          *workload_args(a)], env)
            for r in range(a.replicas):
                start_replica(r)
        elif arm == "torchrun":
            ckpt = out / "checkpoints"
            ckpt.mkdir(exist_ok=True)
            for f in ckpt.glob("*"):
                f.unlink()
            procs.start("torchrun", torchrun + ["--max-restarts", "1000", str(PEERS / "ddp_worker.py"), *workload_args(a),
                                                    "--checkpoint-dir", str(ckpt),
                                                    "--checkpoint-every", str(a.checkpoint_every)], env)
        else:  # plain DDP: the no-fault baseline
            procs.start("ddp", torchrun + [str(PEERS / "ddp_worker.py"), *workload_args(a)], env)
        t0 = wait_full(peer_commits(log), a.replicas, a.startup_timeout, procs)
        injector = Injector(faults, t0, worker_pids(log))
        injector.start()
        while time.time() < t0 + duration:
            time.sleep(0.1)
            for r, proc in list(replicas.items()):  # torchft has no launcher: the bench restarts
                if proc.poll() is not None:
                    start_replica(r)
        t_end = time.time()
        injector.stop()
    finally:
        procs.stop(log)
    run_dir = out / "run"
    write_run(run_dir, sorted(records(log), key=lambda r: r["t"]), injector.injections, a.replicas, t_launch, t_end)
    return run_dir


def run_tenacia(a: argparse.Namespace, out: Path, duration: float, faults: list[Fault],
                step_s: float | None, lease: str = "dir") -> Path:
    """One run of `tenacia train --replicas N` with the schedule in its [chaos] section; ``lease``:
    ``replicas.lease`` (the tenacia-etcd arm: an etcd this bench started)."""
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    if run_dir.exists():
        for f in sorted(run_dir.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
    entries = []  # --tenacia-chaos config: the schedule in [chaos], seconds turned into steps
    for f in faults if a.tenacia_chaos == "config" else []:
        step = max(2, round(f.at_s / (step_s or 1.0)))
        entries.append(f"kill:{f.replica}@{step}" if f.kind == "kill" else f"hang:{f.replica}@{step}:{f.seconds:g}")
    cfg = out / "bench.toml"
    cfg.write_text(
        f'[model]\npreset = "{a.preset}"\n[data]\nseq_len = {a.seq_len}\n'
        f"[train]\nsteps = 100000\nbatch_size = {a.batch * a.replicas}\nmicro_batch_size = {a.batch}\n"
        "eval_every = 0\nthreads = 1\nprogress = false\n[checkpoint]\nevery = 0\n"
        f"[chaos]\nfaults = {json.dumps(entries)}\n[replicas]\nlease = \"{lease}\"\n")
    procs = Procs(out)
    events = run_dir / "events.jsonl"

    def poll() -> list[tuple[float, list[int]]]:
        return [(e["t"], e.get("members") or []) for e in records(events) if e.get("event") == "step_committed"]

    try:
        procs.start("tenacia", [sys.executable, "-m", "tenacia", "train", "--replicas", str(a.replicas),
                                "-c", str(cfg), "--run-dir", str(run_dir)], dict(os.environ, PYTHONPATH=str(ROOT)))
        t0 = wait_full(poll, a.replicas, a.startup_timeout, procs)
        injector = Injector(faults if a.tenacia_chaos == "external" else [], t0, tenacia_pids(run_dir))
        injector.start()
        while time.time() < t0 + duration and procs.started[0].poll() is None:
            time.sleep(0.2)
        t_end = time.time()
        injector.stop()
    finally:  # the launcher's session, then each replica (they run in sessions of their own)
        procs.stop()
        pid_of = tenacia_pids(run_dir)
        procs.stop(pids=[p for p in (pid_of(r) for r in range(a.replicas)) if p is not None])
    # The bench's own injections and the end it chose join the run's event log (whole lines, as
    # every writer does).
    with open(events, "a") as f:
        f.write(json.dumps({"t": t_end, "event": "run_finished", "source": "bench", "step": None}) + "\n")
        for inj in injector.injections:
            f.write(json.dumps({"t": inj["t"], "event": "fault_injected", "source": "bench", "step": None,
                                "kind": inj["kind"], "replica": inj["replica"],
                                "params": {**inj.get("params", {}), "pid": inj.get("pid")}}) + "\n")
    return run_dir


def median_step_s(run_dir: Path, replicas: int) -> float | None:
    """Median time between consecutive commits that both hold every replica."""
    commits = [e for e in records(run_dir / "events.jsonl") if e.get("event") == "step_committed"]
    gaps = [b["t"] - a["t"] for a, b in zip(commits, commits[1:], strict=False)
            if len(a.get("members") or []) >= replicas and len(b.get("members") or []) >= replicas]
    return statistics.median(gaps) if gaps else None


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    def stat(kind: str, key: str) -> dict[str, float | None]:
        vals = [f[key] for f in report["faults"] if f["kind"] == kind and f[key] is not None]
        return {"median": statistics.median(vals) if vals else None, "max": max(vals) if vals else None,
                "n": len(vals)}

    return {"goodput": report["goodput"], "steps": report["steps_committed"],
            "faults": report["counts"]["faults"],
            "crash_detection_s": stat("kill", "detection_s"), "crash_stall_s": stat("kill", "stall_s"),
            "crash_back_s": stat("kill", "back_s"), "heal_s": stat("kill", "heal_s"),
            "hang_detection_s": stat("hang", "detection_s"), "hang_stall_s": stat("hang", "stall_s"),
            "fault_free_tokens_per_s": report["fault_free"]["tokens_per_s"]}


def run_nofault(arm: str, a: argparse.Namespace, results: Path, rnd: int) -> tuple[float | None, dict[str, Any]]:
    """One no-fault run of ``arm`` (round ``rnd``): its median full-quorum step and its summary."""
    print(f"[{arm}] no faults, {a.nofault_duration:.0f} s (round {rnd + 1} of {a.nofault_rounds})", flush=True)
    out = results / arm / nofault_dir(rnd)
    nf = (run_tenacia(a, out, a.nofault_duration, [], None, (a.etcd_url if arm == "tenacia-etcd" else "dir")) if arm.startswith("tenacia")
          else run_peer(arm, a, out, a.nofault_duration, []))
    return median_step_s(nf, a.replicas), summarize(tenacia_report.write(nf))


def nofault_dir(rnd: int) -> str:
    return "nofault" if rnd == 0 else f"nofault-{rnd + 1}"


def run_arm(arm: str, a: argparse.Namespace, results: Path, out: dict[str, Any]) -> dict[str, Any]:
    """The fault run of ``arm`` (``out`` holds its no-fault rounds already)."""
    faults = schedule(a.duration, a.replicas, a.crash_every, a.hang_every, a.hang_s)
    if out.get("status", "ok") != "ok":
        return out
    try:
        if arm != "ddp" and a.duration > 0:
            print(f"[{arm}] {len(faults)} faults in {a.duration:.0f} s", flush=True)
            if arm.startswith("tenacia"):
                run = run_tenacia(a, results / arm / "faults", a.duration, faults, out.get("nofault_step_s"),
                                  (a.etcd_url if arm == "tenacia-etcd" else "dir"))
            else:
                run = run_peer(arm, a, results / arm / "faults", a.duration, faults)
            out["faults"] = summarize(tenacia_report.write(run))
            out["run_dir"] = str(run)
        out["status"] = "ok"
    except Exception as e:  # one arm failing (e.g. tenacia's replica CLI not there yet) is reported
        out["status"] = f"failed: {type(e).__name__}: {e}"
        print(f"[{arm}] {out['status']}", flush=True)
    return out


def nofault_rounds(arms: list[str], a: argparse.Namespace, results: Path) -> dict[str, dict[str, Any]]:
    """The no-fault runs, arms interleaved round by round (ddp, tenacia, ..., ddp, tenacia, ...),
    so that a slow spell of the shared machine falls on every arm rather than on one. Each arm's
    step is the median of its rounds' medians; ``nofault_rounds_s`` keeps them all."""
    rows: dict[str, dict[str, Any]] = {arm: {"arm": arm, "status": "ok", "nofault_rounds_s": []} for arm in arms}
    for rnd in range(0 if a.skip_nofault else a.nofault_rounds):
        for arm in arms:
            row = rows[arm]
            if row["status"] != "ok":
                continue
            try:
                step, summary = run_nofault(arm, a, results, rnd)
            except Exception as e:  # noqa: BLE001 - reported in the table, the other arms go on
                row["status"] = f"failed: {type(e).__name__}: {e}"
                print(f"[{arm}] {row['status']}", flush=True)
                continue
            row["nofault_rounds_s"].append(step)
            row.setdefault("nofault", summary)
    for row in rows.values():
        steps = [s for s in row["nofault_rounds_s"] if s is not None]
        if steps:
            row["nofault_step_s"] = statistics.median(steps)
    return rows


def reanalyze(results: Path, replicas: int) -> list[dict[str, Any]]:
    """Measure the saved runs of an earlier invocation again (after a change of definitions):
    peers' event logs are rebuilt from their worker records and the injections they hold."""
    rows = []
    for arm in [x for x in ARMS if (results / x).is_dir()]:
        row: dict[str, Any] = {"arm": arm, "status": "ok"}
        kinds = sorted(p.name for p in (results / arm).iterdir() if p.name.startswith("nofault")) + ["faults"]
        for kind in kinds:
            run = results / arm / kind / "run"
            if not (run / "events.jsonl").exists():
                continue
            if not arm.startswith("tenacia"):
                old = records(run / "events.jsonl")
                injections = [{"t": e["t"], "kind": e["kind"], "replica": e["replica"], "params": e.get("params", {})}
                              for e in old if e["event"] == "fault_injected"]
                t_launch = next(e["t"] for e in old if e["event"] == "run_started")
                t_end = next(e["t"] for e in old if e["event"] == "run_finished")
                write_run(run, sorted(records(results / arm / kind / "workers.jsonl"), key=lambda r: r["t"]),
                          injections, replicas, t_launch, t_end)
            if kind.startswith("nofault"):
                row.setdefault("nofault_rounds_s", []).append(median_step_s(run, replicas))
                steps = [x for x in row["nofault_rounds_s"] if x is not None]
                row["nofault_step_s"] = statistics.median(steps) if steps else None
                if kind != "nofault":
                    continue
            row[kind] = summarize(tenacia_report.write(run))
        rows.append(row)
    return rows


def fmt(stat: dict[str, Any] | None, unit: str = "s") -> str:
    if not stat or stat.get("median") is None:
        return "-"
    return f"{stat['median']:.2f} / {stat['max']:.2f} {unit}"


def step_cell(step: float | None, rounds: list[float | None]) -> str:
    if step is None:
        return "-"
    each = ", ".join("-" if x is None else f"{x:.3f}" for x in rounds)
    return f"{step:.3f} s" + (f" ({each})" if len(rounds) > 1 else "")


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    base = next((r.get("nofault_step_s") for r in rows if r["arm"] == "ddp"), None)
    t = Table(title="faults: median / max over the faults of each kind")
    for col in ("arm", "crash detection", "crash stall", "replica back", "hang detection", "hang stall",
                "goodput", "step (no faults)", "overhead vs DDP", "status"):
        t.add_column(col, justify="right")
    for r in rows:
        f = r.get("faults") or {}
        step = r.get("nofault_step_s")
        over = f"{100 * (step / base - 1):+.1f}%" if step and base else "-"
        gp = f.get("goodput")
        t.add_row(r["arm"], fmt(f.get("crash_detection_s")), fmt(f.get("crash_stall_s")), fmt(f.get("crash_back_s")),
                  fmt(f.get("hang_detection_s")), fmt(f.get("hang_stall_s")),
                  "-" if gp is None else f"{100 * gp:.1f}%", step_cell(step, r.get("nofault_rounds_s") or []), over,
                  r["status"][:40])
    Console(width=200).print(t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--duration", type=float, default=300.0, help="seconds of the fault schedule per arm")
    p.add_argument("--nofault-duration", type=float, default=45.0)
    p.add_argument("--nofault-rounds", type=int, default=2,
                   help="no-fault runs per arm, arms interleaved; the step is the median of the rounds")
    p.add_argument("--skip-nofault", action="store_true")
    p.add_argument("--crash-every", type=float, default=30.0)
    p.add_argument("--hang-every", type=float, default=120.0)
    p.add_argument("--hang-s", type=float, default=10.0)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=4, help="samples per replica per step")
    p.add_argument("--checkpoint-every", type=int, default=10, help="steps between torchrun-arm checkpoints")
    p.add_argument("--tenacia-chaos", choices=("external", "config"), default="external",
                   help="external: the bench signals tenacia's replica pids on the same clock as the peers; "
                        "config: tenacia's own [chaos] schedule, seconds converted to steps")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    p.add_argument("--reanalyze", metavar="DIR", help="only measure again the runs saved in DIR "
                   "(a bench/results/faults-<time> directory) and print the table")
    a = p.parse_args()
    if a.reanalyze:
        rows = reanalyze(Path(a.reanalyze), a.replicas)
        print_table(rows)
        path = Path(a.reanalyze).with_suffix(".reanalyzed.json")
        path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "arms": rows}, indent=1) + "\n")
        print(f"wrote {path}")
        return 0
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    bad = [x for x in arms if x not in ARMS]
    if bad:
        p.error(f"--arms: unknown {', '.join(bad)}; allowed: {', '.join(ARMS)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    load_start = os.getloadavg()
    results = Path(a.results) / f"faults-{stamp}"
    if a.nofault_rounds < 1:
        p.error(f"--nofault-rounds must be >= 1, got {a.nofault_rounds}")
    with contextlib.ExitStack() as stack:
        a.etcd_url = None
        if "tenacia-etcd" in arms:  # one etcd for the arm's runs, on loopback, data under the results
            (results / "etcd").mkdir(parents=True, exist_ok=True)
            a.etcd_url = stack.enter_context(EtcdServer(results / "etcd" / "data")).url
        first = nofault_rounds(arms, a, results)
        rows = [run_arm(arm, a, results, first[arm]) for arm in arms]
    print_table(rows)
    doc = {"args": vars(a), "loadavg_start": load_start, "arms": rows,
           "schedule": [dataclasses.asdict(f) for f in schedule(a.duration, a.replicas, a.crash_every,
                                                                 a.hang_every, a.hang_s)]}
    path = write_results("faults", doc, Path(a.results) / f"faults-{stamp}.json", indent=1)
    print(f"wrote {path} and the run directories under {results}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
