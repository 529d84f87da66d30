"""One tenacia arm of bench/slow_links.py behind the link for a few rounds: its speed and each member's wait.

    sudo .venv/bin/python bench/slow_links_check.py diloco-delay-int2-rs --rounds 12 --delay 10

A check before a bench, not a bench: no ceiling, no reference, no target (the run's own schedule is
``--rounds`` long). The arm runs as the bench runs it (``slow_links_arms.tenacia_run``: 4 replicas of
the micro model, H = 100, 100 ms and 100 Mbit/s, ``--settings``' learning rates); prints tokens/s,
the share of the sum of its members' own speeds (``of_member_speeds``), each member's median and
worst wait in a round, and bytes per token at the forwarder. ``bench/round_parts.py`` takes the
run directory apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]
import slow_links_arms as arms  # noqa: E402
from slow_links_settings import use_settings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arm", choices=sorted(arms.TENACIA_ARMS))
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--delay", type=int, default=16, help="the -delay arms' replicas.outer.delay")
    p.add_argument("--settings", type=Path, default=Path(__file__).resolve().parent / "slow_links_settings_16x.json")
    p.add_argument("--out", type=Path, default=Path("/tmp/slow_links_check"))
    a = p.parse_args()
    use_settings(a.settings, arms.TWINS)
    run = argparse.Namespace(replicas=4, preset="micro", seq_len=64, batch=8, eval_batches=8, inner_steps=100,
                             fragments=4, topk=0.03, delay=a.delay, tokens=a.rounds * 4 * 8 * 64 * 100,
                             eval_every=4 * 8 * 64 * 100, past=1.0, timeout=600)
    r = arms.tenacia_run(a.arm, run, a.out / a.arm, 100.0, 100, None, None)
    print(json.dumps({k: r.get(k) for k in ("tokens_per_s", "of_member_speeds", "waits", "member_speeds",
                                            "bytes_per_token", "error")}, indent=1))


if __name__ == "__main__":
    main()
