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
from slow_links_settings import SETTINGS, SETTINGS_FILE, settings_overrides, use_settings  # noqa: E402

from tenacia.events import read_events  # noqa: E402

# arm -> config overrides of tenacia's sync (H and F come from the flags; learning rates and the outer step from SETTINGS)
TENACIA_ARMS = {
    "ddp": ["replicas.sync=ddp"],
    "diloco": ["replicas.sync=diloco"],
    "diloco-int8": ["replicas.sync=diloco", "replicas.outer.quantize=int8"],
    "streaming": ["replicas.sync=streaming"],
    "streaming-int4": ["replicas.sync=streaming", "replicas.outer.quantize=int4"],
    # diloco with its exchange beside the next round's inner steps and its step one round late,
    # mixed into the local copy as Streaming DiLoCo does (streaming with one fragment)
    "diloco-overlap": ["replicas.sync=streaming", "replicas.outer.fragments=1"],
    # the same overlap with the eager outer step (Kale et al. 2025) in place of the mix: a member
    # starts each round where the outer step its own progress would make lands, the real step lands
    # a round late (docs/sync.md)
    "diloco-eager": ["replicas.sync=streaming", "replicas.outer.fragments=1", "replicas.outer.eager=true"],
    "streaming-int4-eager": ["replicas.sync=streaming", "replicas.outer.quantize=int4", "replicas.outer.eager=true"],
    # SparseLoCo-style: the largest --topk of each block, 4-bit, error feedback (the default); its
    # default outer step a plain average (lr 1, no momentum): with DiLoCo's Nesterov momentum 0.9, top-k
    # 3% diverged in 8 rounds of H = 100 (eval loss 4.76 after 4 rounds, 6.06 after 8; docs/benchmarks.md)
    "diloco-int4-topk": ["replicas.sync=diloco", "replicas.outer.quantize=int4"],
    # the speculative outer step (docs/sync.md): a member trains the next round's first inner batches
    # while the verdict is in flight, kept when the commit starts the round where it assumed
    "diloco-spec": ["replicas.sync=diloco", "replicas.outer.speculate=true"],
    "diloco-eager-spec": ["replicas.sync=streaming", "replicas.outer.fragments=1", "replicas.outer.eager=true",
                          "replicas.outer.speculate=true"],
    # dense int2 (four levels a block) reduce-scattered, summed per chunk, re-quantized and all-gathered:
    # about 1.5 compressed copies a member at R = 4 (replicas/compressed_reduce.py); and its speculative twin
    "diloco-int2-rs": ["replicas.sync=diloco", "replicas.outer.quantize=int2", "replicas.outer.exchange=reduce_scatter"],
    "diloco-spec-int2-rs": ["replicas.sync=diloco", "replicas.outer.quantize=int2",
                            "replicas.outer.exchange=reduce_scatter", "replicas.outer.speculate=true"],
    # the same exchange with the delayed outer step (replicas.outer.delay = the bench's --delay): a member
    # trains the next round's first inner batches from its own end of the round while the exchange, vote
    # and verdict fly, then rebases them on the new global parameters (docs/sync.md)
    "diloco-delay-int2-rs": ["replicas.sync=diloco", "replicas.outer.quantize=int2",
                             "replicas.outer.exchange=reduce_scatter"],
}
DELAY_ARMS = ("diloco-delay-int2-rs",)
# ``<arm>-nc``: the arm with every member's inner AdamW fed the noise-corrected second moment
# (``replicas.outer.inner_second_moment``, tenacia/train/second_moment.py); its settings are its twin's
NOISE_CORRECTED = ("diloco", "diloco-spec", "diloco-eager", "diloco-eager-spec", "streaming-int4", "diloco-int4-topk")
TENACIA_ARMS.update({f"{arm}-nc": [*TENACIA_ARMS[arm], "replicas.outer.inner_second_moment=noise_corrected"]
                     for arm in NOISE_CORRECTED})
# an arm that trains the same bits as another (speculation changes when, not what) takes its settings
TWINS = {"diloco-spec": "diloco", "diloco-eager-spec": "diloco-eager", "diloco-spec-int2-rs": "diloco-int2-rs"}
TWINS.update({f"{arm}-nc": TWINS.get(arm, arm) for arm in NOISE_CORRECTED})
TOPK_ARMS = ("diloco-int4-topk", "diloco-int4-topk-nc")
# each arm's learning rates and outer step: bench/slow_links_settings.py (the bench's --settings picks the file)
use_settings(SETTINGS_FILE, TWINS)
TORCHFT_AS = {"torchft-diloco": "diloco", "torchft-streaming": "streaming", "torchft-localsgd": "localsgd"}
TORCHFT_FP32 = ("torchft arms: fp32 exchange. torchft's quantized exchange is unavailable on CPU: Manager.allreduce "
                "quantizes only when Triton is importable (torchft/quantization.py imports it) and otherwise sends fp32")
EXIT_GRACE_S = 60.0  # how long a tenacia arm may take to exit after its last step
TORCHFT_ARMS = tuple(TORCHFT_AS)


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


def budget_steps(arm: str, a: argparse.Namespace, tokens: int | None = None) -> int:
    """Protocol steps of ``tokens`` (default the budget): ddp's steps of the global batch
    (``replicas x batch`` samples), or a diloco-family arm's outer rounds of ``inner_steps`` of them."""
    steps = (tokens or a.tokens) // (a.replicas * a.batch * a.seq_len)
    return steps if arm == "ddp" else steps // a.inner_steps


def tenacia_steps(arm: str, a: argparse.Namespace, past: float = 1.0) -> list[str]:
    """Equal tokens for every arm: the budget ``a.tokens``, evaluated every ``a.eval_every``; with
    ``past`` > 1 the run may go on to ``past`` times the budget (to its target loss), its schedule
    still the budget's (``optim.decay_steps``): the budget is trained as a run of that length."""
    budget = budget_steps(arm, a)
    per_step = a.tokens // budget
    eval_every = max(1, a.eval_every // per_step)
    topk = [f"replicas.outer.topk={a.topk}"] if arm in TOPK_ARMS else []
    delay = [f"replicas.outer.delay={a.delay}"] if arm in DELAY_ARMS else []
    return [f"train.batch_size={a.replicas * a.batch}", f"train.steps={round(budget * past)}",
            f"optim.decay_steps={budget}", f"train.eval_every={eval_every}", *topk, *delay]


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
              sent: int | None, target: float | None, ceiling: float | None, all_tokens: int | None = None,
              budget_eval: int | None = None) -> dict[str, Any]:
    """``tokens`` trained between ``t0`` and the last of ``train`` (the budget's steps); bytes per
    token over ``all_tokens`` (default ``tokens``), every token the run trained, the steps past the
    budget too; the eval loss at step ``budget_eval`` (default the last eval); the time from ``t0``
    to the first eval at or under ``target``, and the tokens trained by then (``evals``' ``tokens``)."""
    end = train[-1]["t"] if train else t0
    rate = tokens / max(end - t0, 1e-9)
    all_tokens = all_tokens or tokens
    hit = next((e for e in evals if target is not None and e["eval_loss"] <= target), None)
    at_budget = next((e for e in evals if e.get("step") == budget_eval), None) if budget_eval else \
        (evals[-1] if evals else None)
    return {"tokens": tokens, "seconds": end - t0, "tokens_per_s": rate,
            "utilization": rate / ceiling if ceiling else None,
            "bytes_per_token": sent / all_tokens if sent is not None and all_tokens else None,
            "eval_loss": at_budget["eval_loss"] if at_budget else None,
            "time_to_target_s": hit["t"] - t0 if hit else None,
            "tokens_to_target": hit.get("tokens") if hit else None}


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


def member_speeds(steps: list[dict[str, Any]]) -> dict[str, float] | None:
    """Per member, the median over rounds after the first of its tokens over its compute seconds
    (``step_committed`` events of one membership); None when none measured."""
    rounds = [e for e in steps[1:] if e.get("compute_s") and None not in e["compute_s"]]
    if not rounds or any(e["members"] != rounds[0]["members"] for e in rounds):
        return None
    return {str(m): statistics.median(e["member_tokens"][i] / e["compute_s"][i] for e in rounds)
            for i, m in enumerate(rounds[0]["members"])}


def tenacia_run(arm: str, a: argparse.Namespace, out: Path, rtt_ms: float | None, rate_mbit: float,
                target: float | None, ceiling: float | None, extra: list[str] = (),
                tokens: int | None = None) -> dict[str, Any]:
    """One tenacia arm, behind ``tenacia chaos link`` unless ``rtt_ms`` is None (loopback). With a
    ``target``, the run goes on past the budget (to ``a.past`` times it) until an eval reaches the
    target, and is stopped then; tokens/s and the eval loss are the budget's. ``tokens``: stopped
    once that much of the budget was trained and evaluated. The run's learning-rate schedule, and
    so its bits over the budget, are the budget's in every case (``optim.decay_steps``)."""
    run = out / "run"
    past = a.past if target is not None and tokens is None else 1.0
    train = [sys.executable, "-m", "tenacia", "train", "--run-dir", str(run), "--replicas", str(a.replicas)]
    for o in [*tenacia_common(a), *TENACIA_ARMS[arm], *settings_overrides(arm), *tenacia_steps(arm, a, past), *extra]:
        train += ["-o", o]
    cmd = train if rtt_ms is None else [sys.executable, "-m", "tenacia", "chaos", "link", "--mtu", "9000",
                                        *link_flags(rtt_ms, rate_mbit), "--", *train]
    out.mkdir(parents=True, exist_ok=True)
    budget = budget_steps(arm, a, tokens)
    last = round(budget_steps(arm, a) * past)

    def planned_stop(events: list[dict[str, Any]]) -> bool:
        evals = [e for e in events if e["event"] == "eval" and "eval_loss" in e]
        at_budget = any(e["step"] == budget for e in evals)
        return at_budget and (tokens is not None or any(e["eval_loss"] <= target for e in evals if target is not None))

    with open(out / "launcher.log", "wb") as log:
        code, lingered, planned = run_to_last_step(cmd, log, run, last, a.timeout,
                                                   planned_stop if tokens or past > 1 else None)
    if code != 0 and lingered is None and not planned:
        return {"error": f"exit {code}; see {out / 'launcher.log'}"}
    steps, evals = metrics(run)
    t0 = steps[0]["t"]  # from the first commit (start-up and the first step's rendezvous not counted)
    sent = sent_bytes(run) if rtt_ms is not None else None
    in_budget = [e for e in steps if e["step"] <= budget]
    for e in evals:
        e["tokens"] = sum(x["tokens"] for x in steps if x["step"] <= e["step"])
    r = summarize(in_budget, evals, t0, sum(e["tokens"] for e in in_budget[1:]), sent, target, ceiling,
                  all_tokens=sum(e["tokens"] for e in steps), budget_eval=budget)
    r["rounds"] = len(in_budget)
    r["steps_run"] = len(steps)
    r["waits"] = waits(in_budget)
    # drift-free utilization: tokens/s over the sum of the members' own compute speeds in this run
    r["member_speeds"] = member_speeds(in_budget)
    r["of_member_speeds"] = r["tokens_per_s"] / sum(r["member_speeds"].values()) if r["member_speeds"] else None
    r["evals"] = [{"step": e["step"], "eval_loss": e["eval_loss"], "t": e["t"] - t0} for e in evals]
    if lingered is not None:
        r["stopped"] = f"still running {lingered:.0f} s after its last step: stopped (exit {code})"
    return r


def run_to_last_step(cmd: list[str], log: Any, run: Path, last: int, timeout: float,
                     planned_stop: Any = None) -> tuple[int, float | None, bool]:
    """Run ``cmd``; once step ``last`` committed, give it ``EXIT_GRACE_S`` to exit, then SIGTERM it
    (``tenacia chaos link`` and the launcher stop cleanly on it), SIGKILL its session after as long
    again. Returns (exit code, None, False), or (exit code, seconds it ran on after its last step,
    False) when stopped: a replica once took itself for frozen after the last step
    (docs/benchmarks.md). ``planned_stop(events)``: a planned stop as well, by SIGTERM as soon as it
    holds of the run's events so far (exit code, None, True)."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    start, done_at, planned = time.monotonic(), None, False
    while True:
        try:
            return proc.wait(timeout=1 if planned_stop else 5), None, False
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() - start > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(), time.monotonic() - (done_at or start), False
        events = read_events(run / "events.jsonl") if (run / "events.jsonl").exists() else []
        if done_at is None and planned_stop is not None and planned_stop(events):
            done_at, planned = time.monotonic(), True
        if done_at is None and any(e["event"] == "step_committed" and e["step"] == last for e in events):
            done_at = time.monotonic()
        if done_at is not None and (planned or time.monotonic() - done_at >= EXIT_GRACE_S):
            lingered = None if planned else time.monotonic() - done_at
            proc.terminate()
            try:
                return proc.wait(timeout=EXIT_GRACE_S), lingered, planned
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait(), lingered, planned


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
    """Tokens/s of a single-process run over its logged span: the tokens trained between its first
    and last training lines in metrics.jsonl (every ``train.log_every`` steps) over the time between
    them, start-up and the first interval left out. Not the median of the lines' rates: under a
    CPU quota an interval of 10 steps spans a few 100 ms quota periods, so one interval's rate
    depends on where the throttling fell, and the median of five moved by 20% between runs."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    lines = [x for x in lines if "tokens_per_s" in x]
    first, last = lines[0], lines[-1]
    return (last["tokens"] - first["tokens"]) / (last["t"] - first["t"])


def torchft_run(arm: str, a: argparse.Namespace, out: Path, rtt_ms: float, rate_mbit: float,
                target: float | None, ceiling: float | None) -> dict[str, Any]:
    """torchft's DiLoCo / Streaming DiLoCo / LocalSGD, one worker per namespace; the lighthouse
    in node 0 (its quorum traffic crosses the link too, as it would between sites). Tenacia's
    workload (``a.workload``) and the settings of the tenacia arm it mirrors; as tenacia's arms it
    goes on past the budget (to ``a.past`` times it) until replica 0's eval reaches ``target``."""
    from tenacia.chaos.link import LinkConfig, LinkLab

    venv = ensure_torchft_venv()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "workers.jsonl"
    log.unlink(missing_ok=True)
    budget = a.tokens // (a.replicas * a.batch * a.seq_len)
    algo = "localsgd" if arm == "torchft-localsgd" else "diloco"
    frags = a.fragments if arm == "torchft-streaming" else 1
    s = SETTINGS[TORCHFT_AS[arm]]
    env = worker_env(log, time.time() + a.timeout)
    env["BENCH_STEPS"] = str(round(budget * a.past))
    env["BENCH_WORKLOAD"] = str(a.workload)
    # evals right after a sync: a multiple of H steps
    evals_at = max(a.inner_steps, a.eval_every // (a.replicas * a.batch * a.seq_len) // a.inner_steps * a.inner_steps)
    stopped = False
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
                                         "--eval-every", str(evals_at), "--lr", f"{s['lr']:g}",
                                         "--min-lr-ratio", f"{s['min_lr_ratio']:g}",
                                         *([] if algo == "localsgd" else ["--outer-lr", f"{s['outer_lr']:g}",
                                                                         "--outer-momentum", f"{s['outer_momentum']:g}"])],
                                     env, stdout=w_log, stderr=w_log))
        deadline = time.monotonic() + a.timeout
        while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
            time.sleep(1)
            evals = [x for x in records(log) if x["event"] == "worker_eval"] if log.exists() else []
            if target is not None and any(x["step"] == budget for x in evals) and \
                    any(x["eval_loss"] <= target for x in evals):
                stopped = True  # the target reached, the budget evaluated: no need to go on
                for w in workers:
                    w.terminate()
                break
        codes = [w.wait(timeout=EXIT_GRACE_S) for w in workers]
        sent = sum(c["sent_bytes"] for c in lab.counters())
    if any(codes) and not stopped:
        return {"error": f"worker exit codes {codes}; see {out}"}
    # as for tenacia's diloco arms, from the end of the first round (its sync done) to the budget's last step
    steps_done = [x for x in records(log) if x["event"] == "worker_step"]
    t0 = min(x["t"] for x in steps_done if x["step"] == a.inner_steps)
    in_budget = [x for x in steps_done if x["step"] <= budget]
    trained = sum(x["tokens"] for x in in_budget if x["step"] > a.inner_steps)
    per_step = a.replicas * a.batch * a.seq_len
    evals = [{"t": x["t"], "step": x["step"], "eval_loss": x["eval_loss"], "tokens": x["step"] * per_step}
             for x in records(log) if x["event"] == "worker_eval"]
    r = summarize([{"t": max(x["t"] for x in in_budget)}], evals, t0, trained, sent, target, ceiling,
                  all_tokens=sum(x["tokens"] for x in steps_done), budget_eval=budget)
    r["evals"] = [{"step": e["step"], "eval_loss": e["eval_loss"], "t": e["t"] - t0} for e in evals]
    r["steps_run"] = max(x["step"] for x in steps_done)
    return r


def peers_reference(a: argparse.Namespace, out: Path, tokens: int | None = None) -> float:
    """The peers' DDP (torchrun, loopback) on the first ``tokens`` of the budget (default all of it),
    on tenacia's workload with ddp's settings and the budget's schedule (``a.workload``): its eval
    loss there checks that both sides train alike (the target is tenacia's ddp's)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "workers.jsonl"
    log.unlink(missing_ok=True)
    env = worker_env(log, time.time() + a.timeout)
    env["BENCH_STEPS"] = str((tokens or a.tokens) // (a.replicas * a.batch * a.seq_len))
    env["BENCH_WORKLOAD"] = str(a.workload)
    procs = Procs(out)
    try:
        p = procs.start("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                str(a.replicas), str(PEERS / "ddp_worker.py"), "--preset", a.preset,
                                "--seq-len", str(a.seq_len), "--batch", str(a.batch)], env)
        p.wait(timeout=a.timeout)
    finally:
        procs.stop(log)
    return [x for x in records(log) if x["event"] == "worker_eval"][-1]["eval_loss"]
