"""``tenacia chaos link`` and ``tenacia chaos link-set``: the command line of ``link_run``.

Units: a delay is ``100ms``, ``0.1s`` or a number of milliseconds (one way: a round trip gains
twice it); a rate ``100mbit``, ``1gbit``, ``500kbit`` or a number of megabit/s (0: no cap); a loss
``0.1%`` or a probability.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..config import ConfigError, add_config_args, flag_overrides, load

_NUMBER = r"(?P<n>\d+(?:\.\d+)?(?:e-?\d+)?)"


def parse_delay(text: str, field_name: str = "--delay") -> float:
    """Milliseconds from ``100ms``, ``0.1s`` or ``100``."""
    m = re.fullmatch(_NUMBER + r"(?P<unit>ms|s)?", text.strip())
    if m is None:
        raise ConfigError(field_name, text, "a delay like 100ms, 0.1s or 100 (milliseconds), >= 0")
    return float(m["n"]) * (1000.0 if m["unit"] == "s" else 1.0)


def parse_rate(text: str, field_name: str = "--rate") -> float:
    """Megabit/s from ``100mbit``, ``1gbit``, ``500kbit`` or ``100``."""
    m = re.fullmatch(_NUMBER + r"(?P<unit>kbit|mbit|gbit)?", text.strip().lower())
    if m is None:
        raise ConfigError(field_name, text, "a rate like 100mbit, 1gbit, 500kbit or 100 (megabit/s), >= 0")
    return float(m["n"]) * {"kbit": 1e-3, "gbit": 1e3}.get(m["unit"], 1.0)


def parse_loss(text: str, field_name: str = "--loss") -> float:
    """A probability from ``0.1%`` or ``0.001``."""
    m = re.fullmatch(_NUMBER + r"(?P<unit>%)?", text.strip())
    p = float(m["n"]) / (100.0 if m["unit"] else 1.0) if m else -1.0
    if not 0 <= p < 1:
        raise ConfigError(field_name, text, "a loss like 0.1% or 0.001, from 0 to below 1 (100%)")
    return p


def parse_partition(text: str) -> list[float]:
    node, sep, seconds = text.partition(":")
    if not (sep and node.isdigit() and re.fullmatch(_NUMBER, seconds) and float(seconds) > 0):
        raise ConfigError("--partition", text, "NODE:SECONDS, e.g. 1:5 (node 1 off the link for 5 s)")
    return [int(node), float(seconds)]


def train_config(command: list[str]):
    """The run config of a ``tenacia train ...`` command (its ``-c``, ``-o`` and short flags)."""
    from ..train.config import RunConfig

    if "train" not in command:
        raise ConfigError("COMMAND", " ".join(command), "a 'tenacia train ...' command (after '--')")
    p = argparse.ArgumentParser(add_help=False)
    add_config_args(p)
    for dest in RunConfig.FLAGS:
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, type=int if dest == "replicas" else str, default=None)
    args, _ = p.parse_known_args(command[command.index("train") + 1:])
    return load(RunConfig, args.config, flag_overrides(vars(args), RunConfig.FLAGS) + list(args.override))


def register_link(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser("link", help="run a 'tenacia train' job with each replica in a network namespace "
                         "of its own, behind an emulated link (delay, rate, loss)",
                         description="Example: tenacia chaos link --delay 50ms --rate 100mbit -- "
                         "tenacia train --replicas 4. The delay is one way (a round trip gains twice it).")
    p.add_argument("--delay", default="0ms", help="one-way delay of every packet: 100ms, 0.1s (default 0ms)")
    p.add_argument("--rate", default="0", help="each node's sending rate: 100mbit, 1gbit (default 0: no cap)")
    p.add_argument("--loss", default="0", help="probability a packet is lost: 0.1%% or 0.001 (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the loss draws")
    p.add_argument("--mtu", type=int, default=1500,
                   help="the link's MTU; 9000 (jumbo frames) lets the forwarder move 2-3x more bytes/s")
    p.add_argument("--nodes", type=int, default=None,
                   help="namespaces (hosts); replica i runs in node i %% nodes (default: one per replica)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="the training command: tenacia train --replicas N ...")
    p.set_defaults(handler=cmd_link)

    s = kinds.add_parser("link-set", help="change the link of a running 'tenacia chaos link' job")
    s.add_argument("run_dir", metavar="RUN_DIR", help="the job's train.run_dir")
    s.add_argument("--delay", default=None, help="new one-way delay: 100ms, 0.1s")
    s.add_argument("--rate", default=None, help="new sending rate of each node: 100mbit, 1gbit, 0 (no cap)")
    s.add_argument("--loss", default=None, help="new loss probability: 0.1%% or 0.001")
    s.add_argument("--partition", default=None, metavar="NODE:SECONDS", help="cut node NODE off for SECONDS")
    s.set_defaults(handler=cmd_link_set)


def cmd_link(args: argparse.Namespace) -> int:
    from ..faults import link_changes
    from .link import LinkConfig
    from .link_run import LinkRun

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    cfg = train_config(command)
    nodes = args.nodes if args.nodes is not None else max(cfg.replicas.count, 2)
    link = LinkConfig(nodes=nodes, link="tun", delay_ms=parse_delay(args.delay), rate_mbit=parse_rate(args.rate),
                      loss=parse_loss(args.loss), seed=args.seed, mtu=args.mtu)
    run = LinkRun(link, command, Path(cfg.train.run_dir), cfg.replicas.first_id, cfg.replicas.count,
                  link_changes(cfg.chaos))
    return run.run()


def cmd_link_set(args: argparse.Namespace) -> int:
    from .link_run import link_set

    changes = {}
    if args.delay is not None:
        changes["delay_ms"] = parse_delay(args.delay)
    if args.rate is not None:
        changes["rate_mbit"] = parse_rate(args.rate)
    if args.loss is not None:
        changes["loss"] = parse_loss(args.loss)
    if args.partition is not None:
        changes["partition"] = parse_partition(args.partition)
    if not changes:
        print("tenacia chaos link-set: nothing to change (give --delay, --rate, --loss or --partition)",
              file=sys.stderr)
        return 2
    try:
        state = link_set(Path(args.run_dir), changes)
    except RuntimeError as e:
        print(f"tenacia chaos link-set: {e}", file=sys.stderr)
        return 1
    print(f"link of {args.run_dir}: delay {state['delay_ms']:g} ms one way, rate {state['rate_mbit']:g} Mbit/s, "
          f"loss {state['loss']:g}, partitioned nodes {state['partitioned'] or 'none'}")
    return 0
