"""Subcommand ``demo``: the whole path on this machine in a few minutes (README.md, ``make demo``).

Two replicas train the tiny model on the Python standard library's source while chaos kills one
and later freezes it; the report shows what that cost; a sample of generated text shows what the
model learnt; then the model is served with an OpenAI-compatible API and a chat page.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

DEMO_STEPS = 160


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train the tiny model on the embedded corpus (~2 min), sample from it")
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--steps", type=int, default=None, help="override the demo's step count")
    p.add_argument("--no-serve", action="store_true", help="do not start the server at the end")
    p.add_argument("--slow-links", action="store_true",
                   help="instead: replicas on an emulated 100 ms link, diloco against ddp (root; ~3 min)")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.slow_links:
        from .demo_links import run_slow_links_demo

        return run_slow_links_demo(args.run_dir if args.run_dir != "runs/demo" else "runs/demo-links")
    return run_demo(run_dir=args.run_dir, steps=args.steps, serve=not args.no_serve and sys.stdin is not None)


def demo_overrides(run_dir: str, steps: int) -> list[str]:
    kill, hang = max(2, int(steps * 0.3)), max(3, int(steps * 0.65))
    return [
        "model.preset=tiny", "data.corpus=stdlib", "data.seq_len=128", f'train.run_dir="{run_dir}"',
        f"train.steps={steps}", "train.batch_size=16", "train.micro_batch_size=8", "train.log_every=5",
        "train.eval_batches=8", "optim.lr=3e-3", "optim.warmup_steps=15", "checkpoint.every=40",
        "replicas.count=2", "device.threads=1",
        f'chaos.faults=["kill:1@{kill}", "hang:1@{hang}:3"]',
    ]


def sample_text(run_dir: Path, prompt: str = "def ", tokens: int = 80) -> str:
    import torch
    from tokenizers import Tokenizer

    from .checkpoint.inference import load_run_for_inference
    from .data.tokenizer import ENDOFTEXT_ID
    from .model.generate import generate

    model, _, tok_path = load_run_for_inference(run_dir)
    tok = Tokenizer.from_file(str(tok_path))
    gen = torch.Generator().manual_seed(0)
    ids = generate(model, tok.encode(prompt).ids, tokens, temperature=0.8, top_k=40, generator=gen,
                   stop_ids=(ENDOFTEXT_ID,))
    return prompt + tok.decode(ids)


def run_demo(run_dir: str = "runs/demo", steps: int | None = None, serve: bool = True) -> int:
    from rich.console import Console
    from rich.panel import Panel

    from . import config
    from .report.cli import render
    from .report.summary import write as write_report
    from .run import launch_replicas
    from .storage import read_json
    from .train.config import RunConfig

    console = Console()
    steps = steps or DEMO_STEPS
    run = Path(run_dir)
    console.print(Panel.fit(
        "[bold]tenacia demo[/bold]: two replicas train a 4M-parameter Llama on the Python standard "
        "library's own source.\nChaos kills replica 1 (kill -9) and later freezes it (SIGSTOP, 3 s); the "
        "survivor keeps training,\nthe replica comes back and heals from its peer over the network.",
        border_style="cyan"))
    if (run / "config.toml").exists():
        shutil.rmtree(run)  # an earlier demo run: start afresh
    cfg = config.load(RunConfig, None, demo_overrides(run_dir, steps))
    code = launch_replicas(cfg)
    if code != 0:
        console.print(f"[red]training did not finish; logs in {run / 'logs'}[/red]")
        return code
    render(write_report(run))
    finished = read_json(run / "finished.json")
    console.print(f"\nfinal eval loss {finished['eval_loss']:.3f}; timeline chart: {run / 'timeline.png'}")
    console.print(Panel(sample_text(run), title="a sample from the model (prompt 'def ')", border_style="green"))
    console.print(
        "[bold]Try next[/bold]\n"
        f"  tenacia report {run}                      faults, detection, stall, healing, goodput\n"
        "  tenacia train --replicas 3 -o 'chaos.faults=[\"kill_coordinator@50\"]'   kill the leader\n"
        f"  tenacia export {run} --out out/hf           a Hugging Face checkpoint for vLLM/SGLang\n"
        "  tenacia serve smollm2                         serve SmolLM2-135M-Instruct\n"
        "  tenacia plan train --help                     what would this cost on 10,000 chips?")
    if not serve:
        return 0
    from .serve.config import ServeConfig, ServerConfig
    from .serve.server import serve as run_server

    console.print("\n[bold]Serving the model just trained[/bold] (Ctrl-C to stop; --no-serve skips this)")
    return run_server(ServeConfig(model=str(run), server=ServerConfig(port=8000 if port_free(8000) else 0)))


def port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
