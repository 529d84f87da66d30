"""The arms of bench/slow_links.py: how each one is run and what is read back from it.

- tenacia's sync strategies (``tenacia train --replicas``, behind ``tenacia chaos link`` unless on
  loopback): tokens/s from the first committed step to the last, eval losses from the event log,
  bytes from the forwarder's counters (``link.json``);
- the compute ceiling: single-process runs at once, no sync;
- torchft's DiLoCo, Streaming DiLoCo and LocalSGD (its own venv, one worker per namespace), and
  the peers' DDP (torchrun on loopback), whose final eval loss is the torchft arms' target.
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

from tenacia.events import read_events  # noqa: E402

# arm -> config overrides of tenacia's sync (H and F come from the flags)
TENACIA_ARMS = {
    "ddp": ["replicas.sync=ddp"],
    "diloco": ["replicas.sync=diloco"],
    "diloco-int8": ["replicas.sync=diloco", "replicas.outer.quantize=int8"],
    "streaming": ["replicas.sync=streaming"],
    "streaming-int4": ["replicas.sync=streaming", "replicas.outer.quantize=int4"],
    # SparseLoCo-style: the largest --topk of each block, 4-bit, error feedback (the default), and
    # the outer step a plain average (lr 1, no momentum): with DiLoCo's Nesterov momentum 0.9, top-k
    # 3% diverged in 8 rounds of H = 100 (eval loss 4.76 after 4 rounds, 6.06 after 8; docs/benchmarks.md)
    "diloco-int4-topk": ["replicas.sync=diloco", "replicas.outer.quantize=int4", "replicas.outer.lr=1.0",
                         "replicas.outer.momentum=0"],
}
TOPK_ARMS = ("diloco-int4-topk",)
TORCHFT_FP32 = ("torchft arms: fp32 exchange. torchft's quantized exchange is unavailable on CPU: Manager.allreduce "
                "quantizes only when Triton is importable (torchft/quantization.py imports it) and otherwise sends fp32")
EXIT_GRACE_S = 60.0  # how long a tenacia arm may take to exit after its last step
TORCHFT_ARMS = ("torchft-diloco", "torchft-streaming", "torchft-localsgd")


def tenacia_common(a: argparse.Namespace) -> list[str]:
    return [f"model.preset={a.preset}", f"data.seq_len={a.seq_len}", "data.max_bytes=2000000",
            f"train.micro_batch_size={a.batch}", "train.progress=false", "device.threads=1",
            "checkpoint.every=0", f"train.eval_batches={a.eval_batches}", "optim.warmup_steps=10",
            f"replicas.outer.inner_steps={a.inner_steps}", f"replicas.outer.fragments={a.fragments}",
            # the long-link transport for the outer exchange (ddp reduces through gloo whatever this says):
            # a small exchange costs half a round trip instead of gloo's six (docs/benchmarks.md)
            "replicas.outer.transport=streams",
            # the first quorum's hang bound is this floor (no step measured yet) and a quorum that
            # never changes keeps it: 0.5 s made the leader's replica, slow under load to read the
            # final stop, take itself for frozen and wait for finished peers (docs/benchmarks.md)
            "replicas.hang_floor_s=10"]


def tenacia_steps(arm: str, a: argparse.Namespace, tokens: int | None = None) -> list[str]:
    """Equal tokens for every arm: ``a.tokens`` in all (``tokens``, for a shorter run). A ddp step
    trains the global batch (``replicas x batch`` samples); a diloco-family step is one outer round
    of ``inner_steps`` such batches."""
    per_step = a.replicas * a.batch * a.seq_len
    steps = (tokens or a.tokens) // per_step
    if arm != "ddp":
        steps //= a.inner_steps
        per_step *= a.inner_steps
    eval_every = max(1, a.eval_every // per_step)
    topk = [f"replicas.outer.topk={a.topk}"] if arm in TOPK_ARMS else []
    return [f"train.batch_size={a.replicas * a.batch}", f"train.steps={steps}", f"train.eval_every={eval_every}", *topk]


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


def waits(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Each member's wait in a round: the round's time (commit to commit) less the seconds that
    member computed, over the round's time; rounds after the first, where every member computed.
    Per member the median and the worst round, and the members' token shares."""
    rounds = [e for e in steps[1:] if e.get("step_time_s") and e.get("compute_s") and None not in e["compute_s"]]
    if not rounds or any(e["members"] != rounds[0]["members"] for e in rounds):
        return None  # none measured, or a membership change: rounds do not compare
    out: dict[str, Any] = {}
    for i, r in enumerate(rounds[0]["members"]):
        w = [1 - e["compute_s"][i] / e["step_time_s"] for e in rounds]
        out[str(r)] = {"median": statistics.median(w), "max": max(w),
                       "tokens_share": sum(e["member_tokens"][i] for e in rounds) / sum(e["tokens"] for e in rounds)}
    return out


def tenacia_run(arm: str, a: argparse.Namespace, out: Path, rtt_ms: float | None, rate_mbit: float,
                target: float | None, ceiling: float | None, extra: list[str] = (),
                tokens: int | None = None) -> dict[str, Any]:
    """One tenacia arm, behind ``tenacia chaos link`` unless ``rtt_ms`` is None (loopback);
    ``tokens``: stopped once that much of the budget was trained and evaluated (the run's
    learning-rate schedule, and so its bits, stay the whole budget's)."""
    run = out / "run"
    train = [sys.executable, "-m", "tenacia", "train", "--run-dir", str(run), "--replicas", str(a.replicas)]
    for o in [*tenacia_common(a), *TENACIA_ARMS[arm], *tenacia_steps(arm, a), *extra]:
        train += ["-o", o]
    cmd = train if rtt_ms is None else [sys.executable, "-m", "tenacia", "chaos", "link", "--mtu", "9000",
                                        *link_flags(rtt_ms, rate_mbit), "--", *train]
    out.mkdir(parents=True, exist_ok=True)
    last = int(next(o for o in tenacia_steps(arm, a) if o.startswith("train.steps=")).split("=")[1])
    stop_after = int(next(o for o in tenacia_steps(arm, a, tokens) if o.startswith("train.steps=")).split("=")[1]) \
        if tokens else None
    with open(out / "launcher.log", "wb") as log:
        code, lingered = run_to_last_step(cmd, log, run, last, a.timeout, stop_after)
    if code != 0 and lingered is None and stop_after is None:
        return {"error": f"exit {code}; see {out / 'launcher.log'}"}
    steps, evals = metrics(run)
    t0 = steps[0]["t"]  # from the first commit (start-up and the first step's rendezvous not counted)
    sent = sent_bytes(run) if rtt_ms is not None else None
    r = summarize(steps, evals, t0, sum(e["tokens"] for e in steps[1:]), sent, target, ceiling,
                  all_tokens=sum(e["tokens"] for e in steps))
    r["rounds"] = len(steps)
    r["waits"] = waits(steps)
    r["evals"] = [{"step": e["step"], "eval_loss": e["eval_loss"]} for e in evals]
    if lingered is not None:
        r["stopped"] = f"still running {lingered:.0f} s after its last step: stopped (exit {code})"
    return r


def run_to_last_step(cmd: list[str], log: Any, run: Path, last: int, timeout: float,
                     stop_after: int | None = None) -> tuple[int, float | None]:
    """Run ``cmd``; once step ``last`` committed, give it ``EXIT_GRACE_S`` to exit, then SIGTERM it
    (``tenacia chaos link`` and the launcher stop cleanly on it), SIGKILL its session after as long
    again. Returns (exit code, None), or (exit code, seconds it ran on after its last step) when
    stopped: a replica once took itself for frozen after the last step (docs/benchmarks.md).
    ``stop_after``: a planned stop instead, by SIGTERM as soon as step ``stop_after`` was committed
    and evaluated (exit code, None)."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    start, done_at = time.monotonic(), None
    grace = 0.0 if stop_after else EXIT_GRACE_S
    while True:
        try:
            return proc.wait(timeout=1 if stop_after else 5), None
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() - start > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(), time.monotonic() - (done_at or start)
        wanted = ("eval", stop_after) if stop_after else ("step_committed", last)
        if done_at is None and (run / "events.jsonl").exists() and any(
                e["event"] == wanted[0] and e["step"] == wanted[1] for e in read_events(run / "events.jsonl")):
            done_at = time.monotonic()
        if done_at is not None and time.monotonic() - done_at >= grace:
            lingered = None if stop_after else time.monotonic() - done_at
            proc.terminate()
            try:
                return proc.wait(timeout=EXIT_GRACE_S), lingered
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait(), lingered


def ceiling_run(a: argparse.Namespace, out: Path) -> float:
    """Tokens/s of ``a.replicas`` single-process runs at once: the same work with no sync at all
    (``a.ceiling_tokens`` in all; the median step counts, so a shorter run measures the same)."""
    out.mkdir(parents=True, exist_ok=True)
    steps = a.ceiling_tokens // (a.replicas * a.batch * a.seq_len)
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
