"""Subcommands ``train``, ``config show`` and (started by the launcher) ``replica``: a training run
with the faults it asks for.

This is the one place that joins training and fault injection. Training never imports
``tenacia.chaos``; here, at each process's start, chaos installs its hooks: the in-process kill
point (``chaos.killpoints`` on ``tenacia.hooks``), a replica's wrong numbers (``chaos.sdc`` on the
tamper sites of ``tenacia.hooks``) and, for a replica run, the fault schedule as a
supervision plug-in of the launcher, which arms the kill point in every replica process it starts
through the environment.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import add_config_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="inspect the run config")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print the resolved config tree as TOML")
    add_config_args(show)
    show.set_defaults(handler=cmd_config_show)

    p = sub.add_parser("train", help="train a model (one process, or --replicas N fault-tolerant replicas)")
    add_config_args(p)
    p.add_argument("--run-dir", default=None, help="alias of -o train.run_dir=...")
    p.add_argument("--replicas", type=int, default=None, help="alias of -o replicas.count=N")
    p.set_defaults(handler=cmd_train)

    # not listed in --help: the launcher starts each replica process with it
    p = sub.add_parser("replica")
    p.add_argument("--config", required=True)
    p.add_argument("--replica", type=int, default=None, help="this replica's id (omit for a spare)")
    p.add_argument("--join", action="append", default=[])
    p.add_argument("-o", "--override", action="append", default=[])
    p.set_defaults(handler=cmd_replica)


def load_run_config(args: argparse.Namespace):
    from . import config
    from .train.config import RunConfig

    flags = config.flag_overrides(vars(args), RunConfig.FLAGS)
    return config.load(RunConfig, args.config, flags + list(args.override))


def cmd_config_show(args: argparse.Namespace) -> int:
    from . import config

    print(config.dumps_toml(load_run_config(args)))
    return 0


def launch_replicas(cfg) -> int:
    """Run this host's replicas of ``cfg`` under the launcher, with the fault schedule as its
    plug-in; returns the launcher's exit code."""
    from .chaos.injector import ChaosInjector
    from .faults import link_changes
    from .train.replicas.launcher import Launcher
    from .train.replicas.placement import PLACEMENT_ENV

    if link_changes(cfg.chaos) and PLACEMENT_ENV not in os.environ:
        print("tenacia: the link entries of chaos.faults apply only to a run under 'tenacia chaos link'; "
              "ignored here", file=sys.stderr)
    launcher = Launcher(cfg)
    launcher.plugins.append(ChaosInjector(cfg, launcher.run_dir, launcher.events, launcher.pid_of))
    return launcher.run()


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_run_config(args)
    if args.replicas is not None or cfg.replicas.count > 1 or cfg.replicas.join:
        return launch_replicas(cfg)  # the launcher never imports torch: its replicas do

    from .chaos import killpoints
    from .train.trainer import Trainer

    killpoints.install(cfg.chaos.kill_at)
    summary = Trainer(cfg).fit()
    print(f"done: step {summary['step']}, eval loss {summary['eval_loss']:.4f}, "
          f"{summary['tokens']:,} tokens in {summary['wall_s']:.1f}s; checkpoint {summary['checkpoint']}")
    return 0


def cmd_replica(args: argparse.Namespace) -> int:
    from . import config
    from .chaos import killpoints, sdc
    from .train.config import RunConfig
    from .train.replicas.device_slot import SLOT_ENV
    from .train.replicas.replica import run_replica

    cfg = config.load(RunConfig, args.config, args.override)
    killpoints.install(cfg.chaos.kill_at)

    def wrong_numbers(replica: int, events) -> None:  # this device's share of the schedule's wrong numbers
        slot = int(os.environ.get(SLOT_ENV, replica))
        sdc.install(cfg.chaos, slot, lambda event, **fields: events.emit(event, replica=replica, **fields))

    code = run_replica(cfg, args.replica, args.join, on_start=wrong_numbers)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: destroying a gloo group with a collective in flight can block.
    os._exit(code)
