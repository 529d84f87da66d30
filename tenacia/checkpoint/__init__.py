"""Checkpoints: the state a run can always come back to, and the ways out of a run.

Data path: a trainer's state -> ``state.take_snapshot`` (host memory) -> ``writer`` (background
thread) -> ``format.write_snapshot`` (crash-safe directory with a verified manifest) -> back
into a trainer (``format.latest_verified``, ``state.load_*``), into the server
(``inference.load_run_for_inference``) or out to Hugging Face (``export.export_run``).

- ``format.py``: the directory layout, writing, verifying, finding the newest that verifies;
- ``state.py``: model, optimizer and RNG state as named tensors, both ways;
- ``writer.py``: ``CheckpointConfig`` and the background writer that keeps the newest K;
- ``inference.py``: a run directory's newest checkpoint as an eval-mode model;
- ``export.py``: a run as a Hugging Face directory for transformers, vLLM, SGLang.
"""

from .format import FORMAT, CorruptCheckpoint, latest_verified, list_checkpoints, load_file, verify
from .state import (
    Snapshot,
    load_model_weights,
    load_optimizer_tensors,
    model_tensors,
    optimizer_tensors,
    restore_rng,
    state_fingerprint,
    take_snapshot,
)
from .writer import CheckpointConfig, CheckpointWriter

__all__ = [
    "FORMAT", "CheckpointConfig", "CheckpointWriter", "CorruptCheckpoint", "Snapshot", "latest_verified",
    "list_checkpoints", "load_file", "load_model_weights", "load_optimizer_tensors", "model_tensors",
    "optimizer_tensors", "restore_rng",
    "state_fingerprint", "take_snapshot", "verify",
]
