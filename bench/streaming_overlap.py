"""Streaming with and without its overlap over the project's emulated long link, in pairs.

    .venv/bin/python bench/streaming_overlap.py            # 2 pairs at a 100 ms round trip, 100 Mbit/s
    .venv/bin/python bench/streaming_overlap.py --pairs 4  # more pairs (a loaded host needs them)

Each arm is ``tenacia chaos link --delay D/2 --rate R -- tenacia train --replicas 2`` (each replica
in a network namespace of its own, the TUN forwarder, ``tbf``; needs root) with
``replicas.sync = "streaming"``, 2 fragments, 4 inner steps a round, 30 rounds, the micro model,
``replicas.outer.transport = "streams"``, and ``replicas.outer.overlap`` true or false; the two
arms of a pair run back to back, so they see about the same load. Per run: the median seconds
between committed rounds (rounds 6-30: past the first quorum's start) and the final eval loss.
Prints a table and writes bench/results/streaming-overlap-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.preset=micro", "data.seq_len=64", "data.max_bytes=300000", "train.batch_size=8",
         "train.micro_batch_size=4", "train.eval_batches=8", "train.eval_every=0", "train.progress=false",
         "device.threads=1"]
RUN = ["train.steps=30", "optim.warmup_steps=5", "replicas.sync=streaming", "replicas.outer.fragments=2",
       "replicas.outer.inner_steps=4", "replicas.outer.transport=streams", "replicas.spares=0"]


def arm(run_dir: Path, overlap: bool, rtt_ms: float, rate: str) -> dict:
    tenacia = [sys.executable, "-m", "tenacia"]
    overrides = [a for o in (*SMALL, *RUN, f"replicas.outer.overlap={str(overlap).lower()}") for a in ("-o", o)]
    cmd = [*tenacia, "chaos", "link", "--delay", f"{rtt_ms / 2:g}ms", *(["--rate", rate] if rate else []), "--",
           *tenacia, "train", "--replicas", "2", "--run-dir", str(run_dir), *overrides]
    with open(run_dir.with_suffix(".log"), "wb") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=900,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    t = [e["t"] for e in events if e["event"] == "step_committed"]
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)][4:]
    return {"overlap": overlap, "rounds": len(t), "discarded": sum(e["event"] == "step_discarded" for e in events),
            "s_per_round": statistics.median(gaps),
            "eval_loss": [e["eval_loss"] for e in events if e["event"] == "run_finished"][-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--rtt-ms", type=float, default=100.0)
    p.add_argument("--rate", default="100mbit", help="each node's sending rate ('' for none)")
    args = p.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="overlap-") as tmp:
        for i in range(args.pairs):
            for overlap in (True, False):
                r = arm(Path(tmp) / f"{'on' if overlap else 'off'}-{i}", overlap, args.rtt_ms, args.rate)
                runs.append({"pair": i, **r})
                print(f"pair {i}  overlap {'on ' if overlap else 'off'}  {r['s_per_round']:.3f} s/round  "
                      f"eval {r['eval_loss']:.4f}  ({r['rounds']} rounds, {r['discarded']} discarded)", flush=True)
    for overlap in (True, False):
        mine = [r for r in runs if r["overlap"] is overlap]
        print(f"overlap {'on ' if overlap else 'off'}: median of medians "
              f"{statistics.median(r['s_per_round'] for r in mine):.3f} s/round, eval loss "
              f"{min(r['eval_loss'] for r in mine):.4f}-{max(r['eval_loss'] for r in mine):.4f}")
    out = write_results("streaming-overlap", {"args": vars(args), "runs": runs}, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
