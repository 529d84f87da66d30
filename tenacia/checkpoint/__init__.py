"""Checkpoints: the state a run can always come back to, and the ways out of a run.

Data path: a trainer's state -> ``state.take_snapshot`` (host memory) -> ``writer`` (background
thread) -> ``format.write_snapshot`` (crash-safe directory with a verified manifest) -> back
into a trainer (``format.latest_verified``, ``state.load_*``), into the server
(``inference.load_run_for_inference``) or out to Hugging Face (``export.export_run``).

- ``format.py``: the directory layout, writing, verifying, finding the newest that verifies;
- ``state.py``: model, optimizer and RNG state as named tensors, both ways;
- ``config.py``: ``CheckpointConfig`` (torch-free);
- ``writer.py``: the background writer that keeps the newest K;
- ``inference.py``: a run directory's newest checkpoint as an eval-mode model;
- ``export.py``: a run as a Hugging Face directory for transformers, vLLM, SGLang.
"""

import importlib
from typing import Any

# name -> submodule: imported on first use (PEP 562), so that `tenacia export --help` and every
# other command line, which imports ``checkpoint.cli``, does not import torch.
_API = {
    "FORMAT": "format", "CorruptCheckpoint": "format", "latest_verified": "format",
    "list_checkpoints": "format", "load_file": "format", "verify": "format", "manifest_term": "format",
    "ForeignFormat": "format", "Superseded": "format",
    "Snapshot": "format", "load_model_weights": "state", "load_optimizer_tensors": "state",
    "model_tensors": "state", "optimizer_tensors": "state", "restore_rng": "state",
    "state_fingerprint": "state", "tensors_fingerprint": "state", "take_snapshot": "state",
    "CheckpointConfig": "config", "CheckpointWriter": "writer",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
