"""Slow links and mixed chips (issue 15, "Speed"): tenacia's sync strategies against torchft's
DiLoCo and LocalSGD on an emulated link, side by side in one run, and replicas of different speeds.

    .venv/bin/python bench/slow_links.py            # 0 and 100 ms round trip at 100 Mbit/s
    .venv/bin/python bench/slow_links.py --full     # 0, 10, 50, 100, 200 ms at 100 Mbit/s and 1 Gbit/s
    .venv/bin/python bench/slow_links.py --sections quotas

Every arm trains ``--replicas`` replicas of the same preset on the same token budget, each replica
in a network namespace of its own behind the project's TUN forwarder (``tenacia chaos link`` for
tenacia, ``LinkLab`` directly for torchft), which holds every packet half the round trip and counts
the bytes each node sends; ``tbf`` caps each node's sending rate.

Sections (one table each; all results go to bench/results/slow_links-<time>.json):
- ``links``: first, with no link, the compute ceiling (``--replicas`` single-process runs at once,
  no sync: the same processes on the same cores) and the two references whose final eval loss is
  the target loss of their family, fixed before any arm runs: tenacia's ddp, and the peers' DDP
  (bench/peers/ddp_worker.py; the peers train byte tokens, tenacia its own tokenizer's, so eval
  losses compare within a family only). Then for each rate and round trip, each arm: tokens/s,
  compute utilization (tokens/s over the ceiling), bytes per token sent (at the forwarder),
  final eval loss (at equal tokens), and the time to the target loss (from the first committed
  step; evals every ``--eval-every`` tokens' worth of steps).
- ``quotas``: replicas on CPU quotas (``--quotas``, cgroups): each quota's solo tokens/s, then
  tenacia diloco and ddp with every replica on its quota: tokens/s over the sum of the solos.

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
import signal
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
from numeric_faults import cpu_model  # noqa: E402
from slow_links_report import goals, markdown, plot  # noqa: E402

from tenacia.events import read_events  # noqa: E402

# arm -> config overrides of tenacia's sync (H and F come from the flags)
TENACIA_ARMS = {
    "ddp": ["replicas.sync=ddp"],
    "diloco": ["replicas.sync=diloco"],
    "diloco-int8": ["replicas.sync=diloco", "replicas.outer.quantize=int8"],
    "streaming": ["replicas.sync=streaming"],
    "streaming-int4": ["replicas.sync=streaming", "replicas.outer.quantize=int4"],
}
TORCHFT_FP32 = ("torchft arms: fp32 exchange. torchft's quantized exchange is unavailable on CPU: Manager.allreduce "
                "quantizes only when Triton is importable (torchft/quantization.py imports it) and otherwise sends fp32")
EXIT_GRACE_S = 60.0  # how long a tenacia arm may take to exit after its last step
TORCHFT_ARMS = ("torchft-diloco", "torchft-streaming", "torchft-localsgd")
DEFAULT_ARMS = ("ddp", "diloco", "streaming", "streaming-int4", "torchft-diloco", "torchft-localsgd")


def tenacia_common(a: argparse.Namespace) -> list[str]:
    return [f"model.preset={a.preset}", f"data.seq_len={a.seq_len}", "data.max_bytes=2000000",
            f"train.micro_batch_size={a.batch}", "train.progress=false", "device.threads=1",
            "checkpoint.every=0", f"train.eval_batches={a.eval_batches}", "optim.warmup_steps=10",
            f"replicas.outer.inner_steps={a.inner_steps}", f"replicas.outer.fragments={a.fragments}",
            # the first quorum's hang bound is this floor (no step measured yet) and a quorum that
            # never changes keeps it: 0.5 s made the leader's replica, slow under load to read the
            # final stop, take itself for frozen and wait for finished peers (docs/benchmarks.md)
            "replicas.hang_floor_s=10"]


def tenacia_steps(arm: str, a: argparse.Namespace) -> list[str]:
    """Equal tokens for every arm: ``a.tokens`` in all. A ddp step trains the global batch
    (``replicas x batch`` samples); a diloco-family step is one outer round of ``inner_steps``
    such batches."""
    per_step = a.replicas * a.batch * a.seq_len
    steps = a.tokens // per_step
    if arm != "ddp":
        steps //= a.inner_steps
        per_step *= a.inner_steps
    eval_every = max(1, a.eval_every // per_step)
    return [f"train.batch_size={a.replicas * a.batch}", f"train.steps={steps}", f"train.eval_every={eval_every}"]


def link_flags(rtt_ms: float, rate_mbit: float) -> list[str]:
    return ["--delay", f"{rtt_ms / 2:g}ms", "--rate", f"{rate_mbit:g}mbit"]


def metrics(run: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(committed steps, evals) of a tenacia run, from its event log: each step's ``t`` and
    ``tokens``, each eval's ``t`` and ``eval_loss``."""
    events = read_events(run / "events.jsonl")
    return ([e for e in events if e["event"] == "step_committed"],
            [e for e in events if e["event"] == "eval" and "eval_loss" in e])


def sent_bytes(run: Path) -> int:
    """Bytes every node sent through the forwarder (``tenacia chaos link``'s link.json)."""
    state = json.loads((run / "link.json").read_text())
    return sum(int(n["sent_bytes"]) for n in state.get("bytes") or [])


def summarize(train: list[dict[str, Any]], evals: list[dict[str, Any]], t0: float, tokens: int,
              sent: int | None, target: float | None, ceiling: float | None, all_tokens: int | None = None
              ) -> dict[str, Any]:
    """``tokens`` trained between ``t0`` and the last step; bytes per token over ``all_tokens``
    (default ``tokens``), every token the run trained."""
    end = train[-1]["t"] if train else t0
    rate = tokens / max(end - t0, 1e-9)
    all_tokens = all_tokens or tokens
    reached = next((e["t"] - t0 for e in evals if target is not None and e["eval_loss"] <= target), None)
    return {"tokens": tokens, "seconds": end - t0, "tokens_per_s": rate,
            "utilization": rate / ceiling if ceiling else None,
            "bytes_per_token": sent / all_tokens if sent is not None and all_tokens else None,
            "eval_loss": evals[-1]["eval_loss"] if evals else None, "time_to_target_s": reached}


def tenacia_run(arm: str, a: argparse.Namespace, out: Path, rtt_ms: float | None, rate_mbit: float,
                target: float | None, ceiling: float | None, extra: list[str] = ()) -> dict[str, Any]:
    """One tenacia arm, behind ``tenacia chaos link`` unless ``rtt_ms`` is None (loopback)."""
    run = out / "run"
    train = [sys.executable, "-m", "tenacia", "train", "--run-dir", str(run), "--replicas", str(a.replicas)]
    for o in [*tenacia_common(a), *TENACIA_ARMS[arm], *tenacia_steps(arm, a), *extra]:
        train += ["-o", o]
    cmd = train if rtt_ms is None else [sys.executable, "-m", "tenacia", "chaos", "link", "--mtu", "9000",
                                        *link_flags(rtt_ms, rate_mbit), "--", *train]
    out.mkdir(parents=True, exist_ok=True)
    last = int(next(o for o in tenacia_steps(arm, a) if o.startswith("train.steps=")).split("=")[1])
    with open(out / "launcher.log", "wb") as log:
        code, lingered = run_to_last_step(cmd, log, run, last, a.timeout)
    if code != 0 and lingered is None:
        return {"error": f"exit {code}; see {out / 'launcher.log'}"}
    steps, evals = metrics(run)
    t0 = steps[0]["t"]  # from the first commit (start-up and the first step's rendezvous not counted)
    sent = sent_bytes(run) if rtt_ms is not None else None
    r = summarize(steps, evals, t0, sum(e["tokens"] for e in steps[1:]), sent, target, ceiling,
                  all_tokens=sum(e["tokens"] for e in steps))
    if lingered is not None:
        r["stopped"] = f"still running {lingered:.0f} s after its last step: stopped (exit {code})"
    return r


def run_to_last_step(cmd: list[str], log: Any, run: Path, last: int, timeout: float) -> tuple[int, float | None]:
    """Run ``cmd``; once step ``last`` committed, give it ``EXIT_GRACE_S`` to exit, then SIGTERM it
    (``tenacia chaos link`` and the launcher stop cleanly on it), SIGKILL its session after as long
    again. Returns (exit code, None), or (exit code, seconds it ran on after its last step) when
    stopped: a replica once took itself for frozen after the last step (docs/benchmarks.md)."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    start, done_at = time.monotonic(), None
    while True:
        try:
            return proc.wait(timeout=5), None
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() - start > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(), time.monotonic() - (done_at or start)
        if done_at is None and (run / "events.jsonl").exists() and any(
                e["event"] == "step_committed" and e["step"] == last for e in read_events(run / "events.jsonl")):
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at > EXIT_GRACE_S:
            lingered = time.monotonic() - done_at
            proc.terminate()
            try:
                return proc.wait(timeout=EXIT_GRACE_S), lingered
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait(), lingered


def ceiling_run(a: argparse.Namespace, out: Path) -> float:
    """Tokens/s of ``a.replicas`` single-process runs at once: the same work with no sync at all."""
    out.mkdir(parents=True, exist_ok=True)
    steps = a.tokens // (a.replicas * a.batch * a.seq_len)
    procs = []
    for r in range(a.replicas):
        cmd = [sys.executable, "-m", "tenacia", "train", "--run-dir", str(out / f"solo{r}")]
        for o in [*tenacia_common(a), f"train.batch_size={a.batch}", f"train.steps={steps}", "train.eval_every=0",
                  f"data.seed={r}"]:
            cmd += ["-o", o]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    for p in procs:
        p.wait(timeout=a.timeout)
    return sum(solo_rate(out / f"solo{r}") for r in range(a.replicas))


def solo_rate(run: Path) -> float:
    """Median tokens/s of a single-process run (its metrics.jsonl lines)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return statistics.median(x["tokens_per_s"] for x in lines if "tokens_per_s" in x)


def torchft_run(arm: str, a: argparse.Namespace, out: Path, rtt_ms: float, rate_mbit: float,
                target: float | None, ceiling: float | None) -> dict[str, Any]:
    """torchft's DiLoCo / Streaming DiLoCo / LocalSGD, one worker per namespace; the lighthouse
    in node 0 (its quorum traffic crosses the link too, as it would between sites)."""
    from tenacia.chaos.link import LinkConfig, LinkLab

    venv = ensure_torchft_venv()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "workers.jsonl"
    log.unlink(missing_ok=True)
    steps = a.tokens // (a.replicas * a.batch * a.seq_len)
    algo = "localsgd" if arm == "torchft-localsgd" else "diloco"
    frags = a.fragments if arm == "torchft-streaming" else 1
    env = worker_env(log, time.time() + a.timeout)
    env["BENCH_STEPS"] = str(steps)
    # evals right after a sync: a multiple of H steps
    evals_at = max(a.inner_steps, a.eval_every // (a.replicas * a.batch * a.seq_len) // a.inner_steps * a.inner_steps)
    with LinkLab(LinkConfig(nodes=a.replicas, link="tun", delay_ms=rtt_ms / 2, rate_mbit=rate_mbit, mtu=9000)) as lab:
        lh_log = open(out / "lighthouse.log", "wb")
        lab.popen(0, [str(venv / "bin" / "torchft_lighthouse"), "--min_replicas", str(a.replicas), "--bind",
                      f"{lab.nodes[0].address}:0", "--join_timeout_ms", "5000"], env, stdout=lh_log, stderr=lh_log)
        port = lighthouse_port(out / "lighthouse.log")
        env["TORCHFT_LIGHTHOUSE"] = f"http://{lab.nodes[0].address}:{port}"
        workers = []
        for r in range(a.replicas):
            w_log = open(out / f"worker{r}.log", "wb")
            workers.append(lab.popen(r, [str(venv / "bin" / "python"), str(PEERS / "torchft_diloco_worker.py"),
                                         "--replica", str(r), "--replicas", str(a.replicas), "--algo", algo,
                                         "--inner-steps", str(a.inner_steps), "--fragments", str(frags),
                                         "--host", lab.nodes[r].address, "--preset", a.preset,
                                         "--seq-len", str(a.seq_len), "--batch", str(a.batch),
                                         "--eval-every", str(evals_at)],
                                     env, stdout=w_log, stderr=w_log))
        codes = [w.wait(timeout=a.timeout) for w in workers]
        sent = sum(c["sent_bytes"] for c in lab.counters())
    if any(codes):
        return {"error": f"worker exit codes {codes}; see {out}"}
    # as for tenacia's diloco arms, from the end of the first round (its sync done) to the last step
    steps_done = [x for x in records(log) if x["event"] == "worker_step"]
    t0 = min(x["t"] for x in steps_done if x["step"] == a.inner_steps)
    trained = sum(x["tokens"] for x in steps_done if x["step"] > a.inner_steps)
    evals = [{"t": x["t"], "eval_loss": x["eval_loss"]} for x in records(log) if x["event"] == "worker_eval"]
    return summarize([{"t": max(x["t"] for x in steps_done)}], evals, t0, trained, sent, target, ceiling,
                     all_tokens=sum(x["tokens"] for x in steps_done))


def peers_reference(a: argparse.Namespace, out: Path) -> float:
    """The peers' DDP (torchrun, loopback) on the token budget: its final eval loss is the torchft
    arms' target."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "workers.jsonl"
    log.unlink(missing_ok=True)
    env = worker_env(log, time.time() + a.timeout)
    env["BENCH_STEPS"] = str(a.tokens // (a.replicas * a.batch * a.seq_len))
    procs = Procs(out)
    try:
        p = procs.start("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                str(a.replicas), str(PEERS / "ddp_worker.py"), "--preset", a.preset,
                                "--seq-len", str(a.seq_len), "--batch", str(a.batch)], env)
        p.wait(timeout=a.timeout)
    finally:
        procs.stop(log)
    return [x for x in records(log) if x["event"] == "worker_eval"][-1]["eval_loss"]


def row(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{name:<22} {r['error']}"

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return (f"{name:<22} {f(r['tokens_per_s'], '9.0f')} {f(r['utilization'], '7.1%')} "
            f"{f(r['bytes_per_token'], '11.1f')} {f(r['eval_loss'], '8.4f')} {f(r['time_to_target_s'], '9.1f')}")


HEADER = f"{'arm':<22} {'tokens/s':>9} {'util':>7} {'bytes/token':>11} {'eval':>8} {'to target':>9}"


def section_links(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    # other jobs share this machine's cores: the ceiling is measured before and after the arms,
    # and the arms are judged against the mean (both, and each run's load average, are recorded)
    first = ceiling_run(a, out / "ceiling")
    res: dict[str, Any] = {"ceiling_tokens_per_s": first, "ceilings": [first]}
    ceiling = first
    ref = tenacia_run("ddp", a, out / "ref-tenacia", None, 0, None, ceiling)
    res["target_tenacia"] = ref.get("eval_loss")
    torchft = [x for x in a.arms if x in TORCHFT_ARMS]
    res["target_peers"] = peers_reference(a, out / "ref-peers") if torchft else None
    print(f"ceiling {ceiling:.0f} tokens/s; targets: tenacia {res['target_tenacia']}, peers {res['target_peers']}")
    if torchft:
        res["torchft_note"] = TORCHFT_FP32
        print(TORCHFT_FP32, flush=True)
    res["runs"] = []
    for rate in a.rates:
        for rtt in a.rtts:
            print(f"\n{rtt:g} ms round trip, {rate:g} Mbit/s\n{HEADER}", flush=True)
            for arm in a.arms:
                where = out / f"{arm}-{rate:g}mbit-{rtt:g}ms"
                load = os.getloadavg()[0]
                if arm in TORCHFT_ARMS:
                    r = torchft_run(arm, a, where, rtt, rate, res["target_peers"], ceiling)
                else:
                    r = tenacia_run(arm, a, where, rtt, rate, res["target_tenacia"], ceiling)
                res["runs"].append({"arm": arm, "rtt_ms": rtt, "rate_mbit": rate, "load": load, **r})
                print(row(arm, r), flush=True)
    res["ceilings"].append(ceiling_run(a, out / "ceiling-after"))
    res["ceiling_tokens_per_s"] = statistics.mean(res["ceilings"])
    for r in res["runs"]:
        if "error" not in r:
            r["utilization"] = r["tokens_per_s"] / res["ceiling_tokens_per_s"]
    print(f"\nceiling after the arms {res['ceilings'][1]:.0f} tokens/s (before {first:.0f}): "
          "utilization is over their mean", flush=True)
    return res


def section_quotas(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Solo tokens/s per quota, then the replicas together, each on its quota."""
    from tenacia.chaos.cpuquota import CpuQuotas

    quotas = CpuQuotas()
    solos = []
    steps = max(20, a.tokens // (a.replicas * a.batch * a.seq_len) // 4)
    try:
        for i, cores in enumerate(a.quotas):
            quotas.set(i, cores)
            cmd = [sys.executable, "-m", "tenacia", "train", "--run-dir", str(out / f"solo{i}")]
            for o in [*tenacia_common(a), f"train.batch_size={a.batch}", f"train.steps={steps}", "train.eval_every=0"]:
                cmd += ["-o", o]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            quotas.place(i, p.pid)
            p.wait(timeout=a.timeout)
            solos.append(solo_rate(out / f"solo{i}"))
    finally:
        quotas.close()
    res: dict[str, Any] = {"quotas": a.quotas, "solo_tokens_per_s": solos, "sum_solo": sum(solos), "runs": []}
    print(f"\nCPU quotas {a.quotas}: solo tokens/s {[round(s) for s in solos]}, sum {sum(solos):.0f}\n{HEADER}")
    quota_list = "[" + ", ".join(f"{q:g}" for q in a.quotas) + "]"
    for arm in ("diloco", "ddp"):
        load = os.getloadavg()[0]
        r = tenacia_run(arm, a, out / f"quotas-{arm}", None, 0, None, sum(solos),
                        extra=[f"chaos.cpu_quotas={quota_list}"])
        res["runs"].append({"arm": arm, "load": load, **r})
        print(row(arm, r), flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="links,quotas")
    p.add_argument("--full", action="store_true", help="every round trip and both rates")
    p.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                   help=f"of {', '.join([*TENACIA_ARMS, *TORCHFT_ARMS])}")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--preset", default="micro")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=8, help="samples per replica per (inner) step")
    p.add_argument("--tokens", type=int, default=1_228_800, help="the token budget of every arm")
    p.add_argument("--inner-steps", type=int, default=20, help="H")
    p.add_argument("--fragments", type=int, default=4, help="streaming: fragments synced in turn")
    p.add_argument("--eval-every", type=int, default=150_000, help="tokens between evals")
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--quotas", default="0.5,0.5,0.25,0.125")
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
    a.rtts = [0, 10, 50, 100, 200] if a.full else [0, 100]
    a.rates = [100, 1000] if a.full else [100]
    a.quotas = [float(x) for x in a.quotas.split(",")]
    if "quotas" in a.sections.split(",") and len(a.quotas) != a.replicas:
        p.error(f"--quotas has {len(a.quotas)} entries; it needs one per replica ({a.replicas})")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"slow_links-{stamp}"
    result: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(),
                              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}}
    for section in a.sections.split(","):
        result[section] = {"links": section_links, "quotas": section_quotas}[section](a, out / section)
        (out.parent / f"slow_links-{stamp}.json").write_text(json.dumps(result, indent=1))
    result["goals"] = goals(result)
    path = out.parent / f"slow_links-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\n{markdown(result)}\n\nwrote {path}")
    png = plot(result, a.png or out.parent / f"slow_links-{stamp}.png")
    if png:
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
