"""Subcommand ``export``: a run's newest verified checkpoint as a Hugging Face directory."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's model as a Hugging Face directory (vLLM, SGLang, transformers)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a tenacia run directory")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run
    from .format import CorruptCheckpoint

    try:
        out = export_run(args.run_dir, args.out)
    except CorruptCheckpoint as e:
        print(f"tenacia: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.run_dir} to {out}: load it with transformers' AutoModelForCausalLM, "
          f"or serve it with `tenacia serve {out}` or `vllm serve {out}`")
    return 0
