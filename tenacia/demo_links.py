"""``tenacia demo --slow-links``: replicas on a 100 ms link keep training at full speed.

Three short runs of the same job (2 replicas of the micro model, the same token budget), each
replica in a network namespace of its own (``tenacia chaos link``, root needed):
1. ``diloco`` (rounds of 64 inner steps, a 4-bit outer exchange) with no added delay: the speed
   the replicas reach when the link costs nothing;
2. the same behind a 100 ms round trip at 100 Mbit/s;
3. ``ddp`` (an all-reduce every step) behind the same link, on an eighth of the tokens: what
   synchronous training pays.
A table shows tokens/s against run 1, the bytes sent through the link per token and the eval
loss. The figures of record are bench/slow_links.py's (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .events import read_events

REPLICAS, SEQ, BATCH, INNER = 2, 64, 8, 64
TOKENS = REPLICAS * BATCH * SEQ * INNER * 6  # 6 rounds of 64 inner steps
DDP_SHARE = 8  # the ddp run trains 1/8 of the tokens: at 100 ms a step, the whole budget takes minutes


def job(run: Path, sync: str) -> list[str]:
    per_step = REPLICAS * BATCH * SEQ * (1 if sync == "ddp" else INNER)
    tokens = TOKENS // DDP_SHARE if sync == "ddp" else TOKENS
    overrides = ["model.preset=micro", f"data.seq_len={SEQ}", "data.max_bytes=1000000", "device.threads=1",
                 f"train.batch_size={REPLICAS * BATCH}", f"train.micro_batch_size={BATCH}",
                 f"train.steps={tokens // per_step}", "replicas.outer.quantize=int4", "train.progress=false", "train.eval_every=0",
                 "train.eval_batches=8", "checkpoint.every=0", "optim.warmup_steps=10", f"replicas.sync={sync}",
                 f"replicas.outer.inner_steps={INNER}"]
    cmd = [sys.executable, "-m", "tenacia", "train", "--run-dir", str(run), "--replicas", str(REPLICAS)]
    for o in overrides:
        cmd += ["-o", o]
    return cmd


def run_behind_link(run: Path, sync: str, delay_ms: float, rate: str) -> dict[str, Any]:
    """One run under ``tenacia chaos link``; its tokens/s, bytes sent per token and eval loss."""
    run.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tenacia", "chaos", "link", "--mtu", "9000", "--delay", f"{delay_ms:g}ms",
           "--rate", rate, "--", *job(run, sync)]
    with open(run.parent / f"{run.name}.log", "wb") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"the {sync} run failed (exit {code}); see {run.parent / (run.name + '.log')}")
    steps = [e for e in read_events(run / "events.jsonl") if e["event"] == "step_committed"]
    seconds = steps[-1]["t"] - steps[0]["t"]  # from the first commit: start-up not counted
    tokens = sum(e["tokens"] for e in steps[1:])
    sent = sum(n["sent_bytes"] for n in json.loads((run / "link.json").read_text())["bytes"])
    finished = json.loads((run / "finished.json").read_text())
    return {"tokens_per_s": tokens / seconds, "bytes_per_token": sent / sum(e["tokens"] for e in steps),
            "eval_loss": finished["eval_loss"]}


def run_slow_links_demo(run_dir: str) -> int:
    from rich.console import Console
    from rich.table import Table

    from .chaos import netns

    console = Console()
    ok, why = netns.available()
    if not ok:
        console.print(f"[red]tenacia demo --slow-links needs network namespaces: {why}[/red]")
        return 2
    root = Path(run_dir)
    console.print(f"[bold]Slow links[/bold]: {REPLICAS} replicas, each in a network namespace of its own, "
                  f"{TOKENS:,} tokens per run (about a minute each)")
    arms = [("diloco, no delay", "diloco", 0.0, "0"), ("diloco, 100 ms round trip, 100 Mbit/s", "diloco", 50.0, "100mbit"),
            (f"ddp, 100 ms round trip, 100 Mbit/s (1/{DDP_SHARE} of the tokens)", "ddp", 50.0, "100mbit")]
    rows = []
    for name, sync, delay, rate in arms:
        console.print(f"  running {name} ...")
        rows.append((name, run_behind_link(root / f"{sync}-{delay:g}ms", sync, delay, rate)))
    base = rows[0][1]["tokens_per_s"]
    table = Table(title="the same job behind the link")
    for col in ("run", "tokens/s", "speed vs no delay", "bytes sent per token", "eval loss"):
        table.add_column(col)
    for name, r in rows:
        table.add_row(name, f"{r['tokens_per_s']:.0f}", f"{r['tokens_per_s'] / base:.0%}",
                      f"{r['bytes_per_token']:.1f}", f"{r['eval_loss']:.3f}")
    console.print(table)
    console.print(f"Runs and their link.json (bytes per node) in {root}; the full comparison, with torchft: "
                  "bench/slow_links.py")
    return 0
