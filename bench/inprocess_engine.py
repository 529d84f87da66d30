"""The serving engine in this process, built as `tenacia serve` builds it in its engine process,
for the benches that time it without HTTP (bench/prefill_stall.py, bench/prefill_ways.py):
SmolLM2-135M in float32, transparent huge pages asked for before torch loads, freed memory kept,
torch's threads pinned.

    args = parser(__doc__).parse_args()   # --isa and --threads, and the bench's own arguments
    prepare(args.isa)                      # first: before anything imports torch
    ...                                    # the bench's own imports and patches
    engine = smollm2_engine(args.threads, prefix_caching=False)   # EngineConfig fields
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parser(doc: str, isas: tuple[str, ...] = ("avx512", "avx2", "generic")) -> argparse.ArgumentParser:
    """A bench's argument parser with the engine's two: ``--isa`` (one of ``isas``) and ``--threads``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--isa", choices=isas, help="force a kernel build (TENACIA_ISA)")
    p.add_argument("--threads", type=int, default=2)
    return p


def prepare(isa: str | None) -> None:
    """The engine process's environment: huge pages (read by torch when it loads) and the forced
    kernel build ``isa`` (TENACIA_ISA; None: the engine's choice)."""
    from tenacia.serve.engine.cpu.host import HUGE_PAGES_ENV  # imports no torch

    if "torch" in sys.modules:
        raise RuntimeError("inprocess_engine.prepare() must run before torch is imported")
    os.environ.update(HUGE_PAGES_ENV)
    if isa:
        os.environ["TENACIA_ISA"] = isa


def smollm2_engine(threads: int, **cfg):
    """An ``LLMEngine`` over SmolLM2-135M-Instruct in float32 on this CPU, ``cfg`` its
    ``EngineConfig`` fields, on ``threads`` torch threads."""
    import torch

    from tenacia.serve.config import EngineConfig
    from tenacia.serve.engine.cpu.host import keep_freed_memory
    from tenacia.serve.engine.llm_engine import LLMEngine
    from tenacia.serve.models import load_model

    torch.set_num_threads(threads)
    keep_freed_memory()
    served = load_model("smollm2", torch.device("cpu"), torch.float32)
    return LLMEngine(served.model, served.tokenizer, eos_ids=served.eos_ids, cfg=EngineConfig(**cfg),
                     device=torch.device("cpu"))
