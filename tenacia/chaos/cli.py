"""`tenacia chaos`: inject a fault into a running tenacia job by hand, as the schedule would; or
run a job on an emulated network (``chaos link``, ``chaos link-set``: ``link_cli``).

Targets are found through the run directory: each replica's published address record
(``tenacia.train.replicas.addresses``) holds its pid, and the event log says which replica leads. Every fault is logged as ``fault_injected``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .link_cli import register_link

KINDS = ("kill", "hang", "slow", "kill-coordinator")
KIND_HELP = {"kill": "SIGKILL a replica", "hang": "SIGSTOP a replica for --seconds",
             "slow": "run a replica --factor times slower for --seconds",
             "kill-coordinator": "SIGKILL the current leader"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chaos", help="inject a fault into a running job, or run a job on an emulated network")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind in KINDS:
        k = kinds.add_parser(kind, help=KIND_HELP[kind])
        k.add_argument("run_dir", metavar="RUN_DIR", help="the job's train.run_dir")
        k.add_argument("--replica", type=int, default=None, help="target replica id (not for kill-coordinator)")
        k.add_argument("--seconds", type=float, default=5.0, help="how long a hang or slow-down lasts")
        k.add_argument("--factor", type=float, default=2.0, help="slow-down factor (>= 1)")
        k.set_defaults(handler=cmd_chaos)
    register_link(kinds)


def leader(run_dir: Path) -> int | None:
    from ..events import read_events

    changes = [e for e in read_events(run_dir / "events.jsonl") if e["event"] == "coordinator_changed"]
    return changes[-1]["coordinator"] if changes else None


def replica_pid(run_dir: Path, replica: int) -> int:
    from ..train.replicas import addresses

    info = addresses.read(run_dir, replica)
    if info is None:
        known = [str(i["replica"]) for i in addresses.read_all(run_dir)]
        raise SystemExit(f"tenacia chaos: no replica {replica} in {run_dir} (known: {', '.join(known) or 'none'})")
    return int(info["pid"])


def cmd_chaos(args: argparse.Namespace) -> int:
    from ..events import EventLog
    from .injector import Slowdown, send

    run_dir = Path(args.run_dir)
    if not (run_dir / "events.jsonl").exists():
        print(f"tenacia chaos: {run_dir} is not a running tenacia job (no events.jsonl)", file=sys.stderr)
        return 2
    replica = args.replica
    if args.kind == "kill-coordinator":
        replica = leader(run_dir)
        if replica is None:
            print("tenacia chaos: no leader recorded yet in events.jsonl", file=sys.stderr)
            return 2
    elif replica is None:
        print(f"tenacia chaos: {args.kind} needs --replica", file=sys.stderr)
        return 2
    if args.factor < 1 or args.seconds <= 0:
        print("tenacia chaos: --factor must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    pid = replica_pid(run_dir, replica)
    events = EventLog(run_dir / "events.jsonl", "chaos")
    events.emit("fault_injected", kind=args.kind.replace("-", "_"), replica=replica,
                params={"pid": pid, "seconds": args.seconds, "factor": args.factor})
    if args.kind in ("kill", "kill-coordinator"):
        ok = send(pid, signal.SIGKILL)
    elif args.kind == "hang":
        ok = send(pid, signal.SIGSTOP)
        time.sleep(args.seconds)
        send(pid, signal.SIGCONT)
    else:
        slow = Slowdown(lambda: pid, args.factor)
        slow.start()
        time.sleep(args.seconds)
        slow.stopped.set()
        slow.join()
        ok = send(pid, signal.SIGCONT)
    print(f"{args.kind} replica {replica} (pid {pid}): {'done' if ok else 'process already gone'}")
    return 0 if ok else 1
