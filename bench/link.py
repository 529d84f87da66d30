"""Link lab figures: a 2-rank gloo all-reduce between two network namespaces (tenacia.chaos.link)
with added one-way delay and with a tbf bandwidth cap. Needs root.

    .venv/bin/python bench/link.py

Prints a table and writes bench/results/link-<time>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "chaos")]

from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)
from test_link import Pair  # noqa: E402  (the two-rank gloo worker pair the tests use)

from tenacia.chaos.link import LinkLab  # noqa: E402


def main() -> int:
    rows = []
    with LinkLab(nodes=2, link="tun") as lab:
        pair = Pair(lab)
        for delay in (0.0, 25.0, 50.0):
            lab.set_delay(delay)
            r = pair.ask("tiny 10" if delay else "tiny 50", timeout=60)[0]
            rows.append({"link": "tun", "delay_ms": delay, "rate_mbit": 0, "op": "all-reduce 4 B",
                         "median_s": r["median_s"]})
        lab.set_delay(0.0)
        r = pair.ask("bulk 8000000 3", timeout=60)[0]
        rows.append({"link": "tun", "delay_ms": 0, "rate_mbit": 0, "op": "all-reduce 8 MB", "median_s": r["median_s"]})
    with LinkLab(nodes=2, link="veth") as lab:
        pair = Pair(lab)
        for rate in (0.0, 100.0, 16.0):
            if rate:
                lab.set_rate(rate)
            size = 8_000_000 if rate != 16.0 else 2_000_000
            r = pair.ask(f"bulk {size} 3", timeout=60)[0]
            rows.append({"link": "veth", "delay_ms": 0, "rate_mbit": rate, "op": f"all-reduce {size // 1_000_000} MB",
                         "median_s": r["median_s"]})
    from rich.console import Console
    from rich.table import Table

    t = Table(title="gloo all-reduce, 2 ranks in 2 namespaces (median)")
    for col in ("link", "one-way delay", "rate cap", "operation", "time"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["link"], f"{r['delay_ms']:g} ms", f"{r['rate_mbit']:g} Mbit/s" if r["rate_mbit"] else "-",
                  r["op"], f"{1000 * r['median_s']:.1f} ms")
    Console().print(t)
    path = write_results("link", {"rows": rows}, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
