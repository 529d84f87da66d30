"""Subcommand ``info``: what this machine gives each pillar (device, collectives, CPU kernels)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show the device, collective backend and versions found")
    p.set_defaults(handler=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .device import detect
    from .serve.engine.cpu.kernels import choose  # builds them if it can (docs/serving.md)

    dev = detect()
    table = Table(title="tenacia info", show_header=False)
    for key, value in dev.describe().items():
        table.add_row(key, value)
    kernels, state = choose()
    table.add_row("serve: CPU decode kernels", state if kernels is not None else f"off: {state}")
    Console().print(table)
    return 0
