"""Subcommands `info`, `config show`, `train` and `demo`."""

from __future__ import annotations

import argparse
import sys

from ..cli import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show the device, collective backend and versions found")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("config", help="inspect the run config")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print the resolved config tree as TOML")
    add_config_args(show)
    show.set_defaults(handler=cmd_config_show)

    p = sub.add_parser("train", help="train a model (one process, or --replicas N fault-tolerant replicas)")
    add_config_args(p)
    p.add_argument("--run-dir", default=None, help="shorthand for -o train.run_dir=...")
    p.add_argument("--replicas", type=int, default=None, help="shorthand for -o replicas.count=N")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("demo", help="train the tiny model on the embedded corpus (~2 min), sample from it")
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--steps", type=int, default=None, help="override the demo's step count")
    p.add_argument("--no-serve", action="store_true", help="do not start the server at the end")
    p.set_defaults(handler=cmd_demo)


def load_run_config(args: argparse.Namespace):
    from .. import config
    from ..run_config import RunConfig

    overrides = list(args.override)
    if getattr(args, "run_dir", None):
        overrides.append(f"train.run_dir={args.run_dir!r}".replace("'", '"'))
    if getattr(args, "replicas", None) is not None:
        overrides.append(f"replicas.count={args.replicas}")
    return config.load(RunConfig, args.config, overrides)


def cmd_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..device import detect

    dev = detect()
    table = Table(title="tenacia info", show_header=False)
    for key, value in dev.describe().items():
        table.add_row(key, value)
    from ..serve.engine.decode_kernels import available  # builds them if they can be (~1 s, once)

    why_not = available()
    table.add_row("serve: CPU decode kernels", "available" if why_not is None else f"off: {why_not}")
    Console().print(table)
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from .. import config

    print(config.dumps_toml(load_run_config(args)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_run_config(args)
    if args.replicas is not None or cfg.replicas.count > 1 or cfg.replicas.join:
        from .launcher import Launcher

        return Launcher(cfg).run()
    from .trainer import Trainer

    summary = Trainer(cfg).fit()
    print(f"done: step {summary['step']}, eval loss {summary['eval_loss']:.4f}, "
          f"{summary['tokens']:,} tokens in {summary['wall_s']:.1f}s; checkpoint {summary['checkpoint']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(run_dir=args.run_dir, steps=args.steps, serve=not args.no_serve and sys.stdin is not None)
