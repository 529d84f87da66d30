"""`tenacia` command line: one thin function per subcommand, no logic of its own.

Each pillar registers its subcommands through a ``register(subparsers)`` function in its own
``cli`` module, listed in ``PILLARS``; handlers import their heavy dependencies lazily so that
``tenacia --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .config import ConfigError

PILLARS = (
    "tenacia.train.cli",  # info, config, train, demo
    "tenacia.chaos.cli",  # chaos
    "tenacia.report_cli",  # report
    "tenacia.serve.cli",  # serve, export
    "tenacia.plan.cli",  # plan
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tenacia",
        description="Fault-tolerant LLM training on any PyTorch backend, a portable server, and a fleet planner.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in PILLARS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # a pillar not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as e:
        print(f"tenacia: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The two ways every run-level subcommand takes its config: a TOML file and overrides."""
    p.add_argument("--config", "-c", default=None, help="TOML file with the run config")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. -o optim.lr=3e-4 (repeatable)")
