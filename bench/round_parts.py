"""What a member's wait in an outer round is made of, from a slow-links run's event log (issue 15).

    .venv/bin/python bench/round_parts.py bench/results/slow_links-<time>/links/<arm>-100mbit-100ms/run

From the run's ``step_committed`` events (every member's ``compute_s`` and tokens), its
``speculation`` events and its evals: the round's time, each member's wait (the round's time less
its own compute, as ``slow_links_arms.waits``), what a member trained ahead (under ``speculate`` or
``delay``: inner batches, seconds, how many the rounds took), the spread of the members' compute
in a round, the leader's eval after a commit. Then, on one thread, the CPU work a member does in a
round outside its inner steps for the run's model and exchange (its config): the contribution,
the compressed reduce-scatter's three stages for 4 members, the outer step, a copy of the outer
state (speculation's ``start_after``). The rest of a wait is the link's (one-way trips, bytes) and
the members' skew: these runs put 4 single-thread replicas on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tenacia.config import load  # noqa: E402
from tenacia.events import read_events  # noqa: E402
from tenacia.train.config import RunConfig  # noqa: E402
from tenacia.train.replicas.compress import Compressor  # noqa: E402
from tenacia.train.replicas.compressed_reduce import (  # noqa: E402
    assemble,
    chunk_bounds,
    reduce_chunk,
    scatter_parts,
)
from tenacia.train.trainer import Trainer  # noqa: E402


def from_events(run: Path) -> dict[str, float]:
    """Medians over the rounds after the first (milliseconds unless said)."""
    events = read_events(run / "events.jsonl")
    steps = [e for e in events if e["event"] == "step_committed"][1:]
    spec = [e for e in events if e["event"] == "speculation"]
    commit_t = {e["step"]: e["t"] for e in steps}
    out = {"round": statistics.median(e["step_time_s"] for e in steps) * 1e3}
    for i, m in enumerate(steps[0]["members"]):
        out[f"wait r{m}"] = statistics.median(e["step_time_s"] - e["compute_s"][i] for e in steps) * 1e3
        mine = [e for e in spec if e["replica"] == m]
        if mine:
            out[f"ahead r{m}"] = statistics.median(e["seconds"] for e in mine) * 1e3
            out[f"ahead r{m} batches"] = statistics.median(e["batches"] for e in mine)
    if spec:
        out["ahead kept (fraction)"] = sum(e["kept"] for e in spec) / len(spec)
    out["compute spread"] = statistics.median(max(e["compute_s"]) - min(e["compute_s"]) for e in steps) * 1e3
    evals = [e["t"] - commit_t[e["step"]] for e in events if e["event"] == "eval" and e["step"] in commit_t]
    if evals:
        out["leader's eval after a commit"] = statistics.median(evals) * 1e3
    return out


def cpu_parts(run: Path, members: int = 4, repeat: int = 20) -> dict[str, float]:
    """One thread, milliseconds a call: a member's work in a round outside its inner steps."""
    torch.set_num_threads(1)
    cfg = load(RunConfig, run / "config.toml", [f"train.run_dir={tempfile.mkdtemp()}", "checkpoint.every=0"])
    t = Trainer(cfg, source="round_parts", write_ledger=False)
    o = cfg.replicas.outer
    comp = Compressor(o.quantize, o.block, o.topk, o.error_feedback)
    n = sum(p.numel() for p in t.model.parameters())
    ds = [torch.randn(n) * 1e-3 for _ in range(members)]
    bounds = chunk_bounds(n, o.block, members)
    parts = [scatter_parts(comp, d, 1.0, torch.zeros(n), bounds)[0] for d in ds]
    summed = [reduce_chunk(comp, [p[j] for p in parts], hi - lo)[0] for j, (lo, hi) in enumerate(bounds)]
    params = list(t.model.parameters())
    average = list(ds[0].split([p.numel() for p in params]))

    def ms(f) -> float:  # noqa: ANN001
        f()
        t0 = time.perf_counter()
        for _ in range(repeat):
            f()
        return (time.perf_counter() - t0) / repeat * 1e3

    def contribution() -> torch.Tensor:
        return torch.cat([(g - p.detach()).reshape(-1) for g, p in zip(t.outer.params, params, strict=True)])

    return {"parameters": n, "contribution": ms(contribution),
            "stage 1: encode the chunks": ms(lambda: scatter_parts(comp, ds[0], 1.0, None, bounds)),
            "stage 2: sum and re-encode a chunk": ms(lambda: reduce_chunk(comp, [p[0] for p in parts],
                                                                          bounds[0][1] - bounds[0][0])),
            "stage 3: decode the sums": ms(lambda: assemble(comp, summed, bounds)),
            "outer step": ms(lambda: t.outer.step(0, average)),
            "copy of the outer state": ms(lambda: copy.deepcopy(t.outer))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a tenacia run directory of a diloco-family arm")
    a = p.parse_args()
    for name, parts in (("from the events (ms, medians)", from_events(a.run)), ("CPU, one thread (ms)", cpu_parts(a.run))):
        print(name)
        for k, v in parts.items():
            print(f"  {k:<36} {v:10.1f}" if isinstance(v, float) else f"  {k:<36} {v:>10}")


if __name__ == "__main__":
    main()
