"""The ``quotas`` section of bench/slow_links.py: replicas of different speeds, emulated by cgroup
CPU quotas (``tenacia.chaos.cpuquota``), against the sum of their solo throughputs.

- The solos: one single-process run per quota, each in its own cgroup on its quota, no sync,
  steps in proportion to the quota (400 at the largest, about 16 s); tokens/s over the logged span
  (``solo_rate``). ``concurrent`` (the default) runs the four at
  once, as the replicas run and as the links section's ceiling is measured: the same processes on
  the same cores at the same time. ``alone`` runs them one after another, as until 2026-12-03
  17:50: a solo alone on this 2-vCPU KVM guest ran up to 30% faster than the same quota beside
  the others (docs/benchmarks.md), so the sum of lone solos is not what the replicas together
  could reach. The solos run before and after the replicas; their sums' mean is the reference
  (the guest's speed drifts between runs, 19% between two ceilings of one afternoon).
- Then tenacia diloco (the whole budget) and ddp (``--ddp-link-tokens``) with every replica on its
  quota: tokens/s over the solo sum, and each member's wait in a round (``waits``).
- Drift-free, beside it: each member's own speed in the run, the median over rounds of its
  tokens over the seconds it computed them (``step_committed``'s ``member_tokens`` and
  ``compute_s``): the same process on the same quota at the same moment, no sync in it. The
  replicas' tokens/s over the sum of those is what the sync (waits, votes, outer step, evals)
  kept. At 19:36 the concurrent solo sums before and after the replicas were 34,989 and 41,680
  tokens/s, 3 minutes apart on an otherwise idle guest with 0.2-0.9% steal (docs/benchmarks.md).
- Every phase records the load average and the share of CPU time the hypervisor stole
  (``/proc/stat``), to tell the guest's own contention from the host's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from slow_links_arms import solo_rate, tenacia_common, tenacia_run


def cpu_times() -> list[int]:
    """The first line of /proc/stat: jiffies of user, nice, system, idle, iowait, irq, softirq, steal."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of CPU time between two ``cpu_times`` that the hypervisor stole."""
    d = [b - a for a, b in zip(before, after, strict=True)]
    return d[7] / max(sum(d), 1)


def quota_solos(a: argparse.Namespace, out: Path, mode: str) -> dict[str, Any]:
    """Each quota's solo tokens/s (module docstring), ``concurrent`` or ``alone``."""
    from tenacia.chaos.cpuquota import CpuQuotas

    # steps in proportion to the quota: run at once, the solos train for about the same time
    base = max(40, a.ceiling_tokens // (a.replicas * a.batch * a.seq_len) * 4)
    quotas, procs, rates = CpuQuotas(), {}, []
    load, t0 = os.getloadavg()[0], cpu_times()
    try:
        for i, cores in enumerate(a.quotas):
            quotas.set(i, cores)
            cmd = [sys.executable, "-m", "tenacia", "train", "--run-dir", str(out / f"solo{i}")]
            for o in [*tenacia_common(a), f"train.batch_size={a.batch}",
                      f"train.steps={max(20, round(base * cores / max(a.quotas)))}", "train.eval_every=0",
                      f"data.seed={i}"]:
                cmd += ["-o", o]
            procs[i] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            quotas.place(i, procs[i].pid)
            if mode == "alone":
                procs[i].wait(timeout=a.timeout)
        for p in procs.values():
            p.wait(timeout=a.timeout)
        rates = [solo_rate(out / f"solo{i}") for i in range(len(a.quotas))]
    finally:
        quotas.close()
    return {"mode": mode, "tokens_per_s": rates, "sum": sum(rates), "load": load,
            "steal": steal_share(t0, cpu_times())}


def section_quotas(a: argparse.Namespace, out: Path, save: Any, row: Any, wait_line: Any,
                   header: str) -> dict[str, Any]:
    """Solos before, the replicas on their quotas, solos after (module docstring)."""
    res: dict[str, Any] = {"quotas": a.quotas, "solos": [], "runs": []}
    for mode in a.solos:
        res["solos"].append(quota_solos(a, out / f"solos-{mode}-before", mode))
    reference = a.solos[0]
    print(f"\nCPU quotas {a.quotas}: solo tokens/s " + "; ".join(
        f"{s['mode']} {[round(x) for x in s['tokens_per_s']]} sum {s['sum']:.0f} (steal {s['steal']:.1%})"
        for s in res["solos"]))
    first = next(s for s in res["solos"] if s["mode"] == reference)
    quota_list = "[" + ", ".join(f"{q:g}" for q in a.quotas) + "]"
    print(header)
    for arm in ("diloco", "ddp"):  # ddp, the lock-step reference: on the first --ddp-link-tokens
        load, t0 = os.getloadavg()[0], cpu_times()
        r = tenacia_run(arm, a, out / f"quotas-{arm}", None, 0, None, first["sum"],
                        extra=[f"chaos.cpu_quotas={quota_list}"], tokens=a.ddp_link_tokens if arm == "ddp" else None)
        r.pop("evals", None)
        res["runs"].append({"arm": arm, "load": load, "load_after": os.getloadavg()[0],
                            "steal": steal_share(t0, cpu_times()), **r})
        save(res)
        print(row(arm, r) + ("\n" + wait_line(r) if r.get("waits") else ""), flush=True)
    res["solos"].append(quota_solos(a, out / f"solos-{reference}-after", reference))
    sums = [s["sum"] for s in res["solos"] if s["mode"] == reference]
    res["solo_tokens_per_s"] = [statistics.mean(x) for x in zip(*(s["tokens_per_s"] for s in res["solos"]
                                                                  if s["mode"] == reference), strict=True)]
    res["sum_solo"] = statistics.mean(sums)
    for r in res["runs"]:
        if "error" not in r:
            r["utilization"] = r["tokens_per_s"] / res["sum_solo"]
    print(f"{reference} solo sums before and after the replicas: {sums[0]:.0f}, {sums[-1]:.0f} "
          f"(steal {res['solos'][-1]['steal']:.1%}); the runs are judged against their mean {res['sum_solo']:.0f}")
    for r in res["runs"]:
        if "error" not in r:
            inrun = r.get("of_member_speeds")
            print(f"  {r['arm']}: {r['utilization']:.1%} of the solo sum"
                  + (f", {inrun:.1%} of its members' own speeds in the run" if inrun else ""))
    return res
