"""A warm spare: a replica process started ahead of need, waiting for the launcher's order."""

from __future__ import annotations

import json
import sys

import torch

from ..config import RunConfig
from ..trainer import Trainer


def wait_as_spare(cfg: RunConfig) -> tuple[int, list[str], Trainer]:
    """A spare process: import, build the model and optimizer, load the newest disk checkpoint,
    then wait on stdin for the launcher's ``{"replica": id, "join": [...]}``. A dead replica is
    thus replaced in the time healing takes, not the time a Python process takes to start."""
    torch.set_num_threads(cfg.replica_threads)
    trainer = Trainer(cfg, source="replica:spare", write_ledger=False)
    if cfg.checkpoint.resume:
        trainer.resume(event="replica_checkpoint_loaded")
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)  # the launcher closed our stdin: not needed any more
    order = json.loads(line)
    return int(order["replica"]), list(order["join"]), trainer
