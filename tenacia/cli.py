"""`tenacia` command line: one thin function per subcommand, no logic of its own.

Each pillar registers its subcommands through a ``register(subparsers)`` function in its own
``cli`` module, listed in ``PILLARS``; handlers import their heavy dependencies lazily so that
``tenacia --help`` stays fast. Every command that takes a config tree takes it the same way
(``tenacia.config.add_config_args``: ``-c FILE.toml`` and ``-o a.b=value``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .config import ConfigError

PILLARS = (
    "tenacia.info",  # info
    "tenacia.run",  # config, train (and the launcher's replica)
    "tenacia.chaos.cli",  # chaos
    "tenacia.report.cli",  # report
    "tenacia.checkpoint.cli",  # export
    "tenacia.serve.cli",  # serve
    "tenacia.plan.cli",  # plan
    "tenacia.demo",  # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tenacia",
        description="Fault-tolerant LLM training on any PyTorch backend, a portable server, and a fleet planner.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in PILLARS:
        importlib.import_module(name).register(sub)
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
