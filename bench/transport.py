"""Collectives over the project's emulated long link: stock gloo beside tenacia's transport
(``tenacia.train.transport``), each rank in a network namespace of its own behind the TUN
forwarder (``tenacia.chaos.link``), with a round trip of 0-200 ms and a ``tbf`` rate cap. Needs root.

    .venv/bin/python bench/transport.py          # 0 and 100 ms round trip, 100 Mbit/s, 4 ranks
    .venv/bin/python bench/transport.py --full   # 0, 10, 50, 100, 200 ms; 100 Mbit/s and 1 Gbit/s; 4 and 2 ranks

Per point: a 40 MB float32 all-reduce (sum; median of --reps) and a 1 KB one (median of 10).
- link use = the time the link rate allows for the bytes each rank must send in a
  bandwidth-optimal all-reduce (2 (R-1)/R x 40 MB; latency not counted) / the measured time;
- forwarder use = the bytes all ranks send (2 (R-1) x 40 MB) / the time / the forwarder's own
  ceiling: R TCP streams at once through the lab with no delay and no cap, measured first;
- round trips = a 1 KB all-reduce's time / the round trip.
Prints a table and writes bench/results/transport-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from results_file import write_results  # noqa: E402  (bench/ is the script's own folder)

from tenacia.chaos.link import LinkLab  # noqa: E402

WORKER = str(ROOT / "tests" / "chaos" / "collective_worker.py")
LARGE, SMALL = 40_000_000, 1024
SINK = ("import socket, sys, time\ns = socket.socket(); s.bind(('0.0.0.0', 7200)); s.listen()\n"
        "print('up', flush=True)\nc, _ = s.accept(); n = 0; buf = bytearray(1 << 20)\n"
        "while (k := c.recv_into(buf)):\n    n += k\nprint(n, flush=True)")
BLAST = ("import socket, sys, time\nc = socket.create_connection((sys.argv[1], 7200))\nblock = bytes(1 << 20)\n"
         "t = time.perf_counter()\nfor _ in range(int(sys.argv[2])):\n    c.sendall(block)\n"
         "c.shutdown(socket.SHUT_WR); c.recv(1); print(time.perf_counter() - t, flush=True)")


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"{proc.args[-8:]} said nothing in {timeout}s (exit code {proc.poll()})")
    return line


class Group:
    """``world`` collective workers in nodes 0 .. world-1 of ``lab``."""

    def __init__(self, lab: LinkLab, world: int, backend: str, streams: int, window: int = 0):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        kw = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.procs = [lab.popen(k, [sys.executable, WORKER, "--rank", str(k), "--world", str(world), "--host",
                                    lab.nodes[k].address, "--backend", backend, "--streams", str(streams),
                                    "--window", str(window), "--timeout", "300"], **kw) for k in range(world)]
        ports = [read_line(p, 60).split()[1] for p in self.procs]
        peers = ",".join(f"{lab.nodes[k].address}:{ports[k] if backend == 'tenacia' else ports[0]}"
                         for k in range(world))
        self.tell(f"peers {peers}")
        for p in self.procs:
            assert read_line(p, 120).strip() == "ready"

    def tell(self, line: str) -> None:
        for p in self.procs:
            p.stdin.write(line + "\n")
            p.stdin.flush()

    def ask(self, command: str, timeout: float) -> list[dict]:
        self.tell(command)
        return [json.loads(read_line(p, timeout)) for p in self.procs]

    def close(self) -> None:
        self.tell("exit")
        for p in self.procs:
            p.wait(30)


def ceiling(lab: LinkLab, world: int, mbytes: int = 200) -> float:
    """Bytes/s through the forwarder with ``world`` TCP streams at once (node k to node k+1)."""
    sinks = [lab.popen((k + 1) % world, [sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
             for k in range(world)]
    for s in sinks:
        assert read_line(s, 30).strip() == "up"
    t = time.perf_counter()
    blasts = [lab.popen(k, [sys.executable, "-c", BLAST, lab.nodes[(k + 1) % world].address, str(mbytes)],
                        stdout=subprocess.PIPE, text=True) for k in range(world)]
    for b in blasts:
        b.wait(300)
    total = sum(int(read_line(s, 60)) for s in sinks)
    return total / (time.perf_counter() - t)


def row(backend: str, world: int, rtt_ms: float, rate: float, op: str, r: list[dict], ceil: float) -> dict:
    t = max(x["median_s"] for x in r)  # the collective ends when its slowest rank does
    out = {"backend": backend, "world": world, "rtt_ms": rtt_ms, "rate_mbit": rate, "op": op, "median_s": t,
           "exact": all(x.get("exact", x.get("ok")) for x in r), "equal_on_all": len({x.get("sha256") for x in r}) == 1}
    if op == "allreduce 40 MB":
        per_rank = 2 * (world - 1) / world * LARGE
        out["link_use"] = per_rank * 8 / (rate * 1e6) / t if rate else None
        out["forwarder_use"] = per_rank * world / t / ceil
    elif rtt_ms:
        out["round_trips"] = t * 1000 / rtt_ms
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the whole sweep (long)")
    p.add_argument("--backends", default="gloo,tenacia")
    p.add_argument("--streams", type=int, default=4, help="TCP streams per peer of tenacia's transport")
    p.add_argument("--window", type=int, default=0,
                   help="socket buffer of each of tenacia's streams, bytes (default 0: the kernel's autotuning)")
    p.add_argument("--reps", type=int, default=2, help="40 MB all-reduces per point")
    p.add_argument("--mtu", type=int, default=9000, help="the lab link's MTU (jumbo frames: the forwarder moves "
                   "2-3x more bytes/s than at 1500)")
    p.add_argument("--rtts", default=None, help="round trips to run, ms, comma-separated (overrides the sweep's)")
    p.add_argument("--rates", default=None, help="rates to run, Mbit/s, comma-separated")
    p.add_argument("--worlds", default=None, help="rank counts to run, comma-separated")
    args = p.parse_args()
    rtts = (0, 10, 50, 100, 200) if args.full else (0, 100)
    rates = (100.0, 1000.0) if args.full else (100.0,)
    worlds = (4, 2) if args.full else (4,)
    rtts = tuple(map(float, args.rtts.split(","))) if args.rtts else rtts
    rates = tuple(map(float, args.rates.split(","))) if args.rates else rates
    worlds = tuple(map(int, args.worlds.split(","))) if args.worlds else worlds
    rows, ceilings = [], {}
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    with LinkLab(nodes=max(worlds), link="tun", mtu=args.mtu) as lab:
        for world in worlds:
            ceilings[world] = ceiling(lab, world)
            print(f"forwarder ceiling, {world} streams at once: {ceilings[world] / 1e6:.1f} MB/s", flush=True)
        for backend in args.backends.split(","):
            for world in worlds:
                group = Group(lab, world, backend, args.streams, args.window)
                for rate in rates:
                    lab.set_rate(rate)
                    for rtt in rtts:
                        lab.set_delay(rtt / 2)
                        group.ask(f"allreduce {SMALL} 2", 120)  # warm: connections, windows
                        r = group.ask(f"allreduce {LARGE} {args.reps}", 1200)
                        rows.append(row(backend, world, rtt, rate, "allreduce 40 MB", r, ceilings[world]))
                        r = group.ask(f"allreduce {SMALL} 10", 300)
                        rows.append(row(backend, world, rtt, rate, "allreduce 1 KB", r, ceilings[world]))
                        print(json.dumps(rows[-2]), json.dumps(rows[-1]), sep="\n", flush=True)
                group.close()
                lab.set_delay(0)
    print_table(rows, ceilings)
    path = write_results("transport", {"started": started, "ended": time.strftime("%Y-%m-%d %H:%M:%S"),
                                       "streams": args.streams, "window": args.window, "mtu": args.mtu,
                                       "ceiling_bytes_per_s": ceilings, "rows": rows}, indent=1)
    print(f"wrote {path}")
    return 0


def print_table(rows: list[dict], ceilings: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="all-reduce across the lab link (slowest rank's median); forwarder ceiling with "
              + ", ".join(f"{w} streams: {c / 1e6:.0f} MB/s" for w, c in ceilings.items()))
    for col in ("backend", "ranks", "round trip", "rate", "operation", "time", "link use", "forwarder use",
                "round trips", "bit-equal to rank-order sum"):
        t.add_column(col, justify="right")
    def pct(v: float | None) -> str:
        return f"{100 * v:.0f}%" if v is not None else "-"

    for r in rows:
        t.add_row(r["backend"], str(r["world"]), f"{r['rtt_ms']:g} ms", f"{r['rate_mbit']:g} Mbit/s", r["op"],
                  f"{1000 * r['median_s']:.1f} ms", pct(r.get("link_use")), pct(r.get("forwarder_use")),
                  f"{r['round_trips']:.2f}" if r.get("round_trips") is not None else "-",
                  "yes" if r["exact"] else "no")
    Console().print(t)


if __name__ == "__main__":
    sys.exit(main())
