"""A run's newest verified checkpoint as a model for inference (serving, export, sampling).

Only the ``[model]`` section of the run's ``config.toml`` is read, so a run directory copied to
another machine (without its corpus) still serves; the section's fields are the ones every
version of tenacia wrote, and an unknown one is refused naming it.
"""

from __future__ import annotations

from pathlib import Path

import tomllib
import torch

from .. import config as cfglib
from ..model import build_model
from ..shape import ModelConfig
from .format import CorruptCheckpoint, latest_verified
from .state import load_model_weights


def run_model_config(run_dir: str | Path) -> ModelConfig:
    """The ``[model]`` section of a run directory's ``config.toml``."""
    run = Path(run_dir)
    if not (run / "config.toml").is_file():
        raise CorruptCheckpoint(f"{run} is not a tenacia run directory: config.toml is missing")
    try:
        table = tomllib.loads((run / "config.toml").read_text()).get("model", {})
    except tomllib.TOMLDecodeError as e:
        raise CorruptCheckpoint(f"{run / 'config.toml'} is not valid TOML ({e})") from None
    return cfglib.from_dict(ModelConfig, table, prefix="model")


def load_run_for_inference(run_dir: str | Path, device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32):
    """The newest verified checkpoint of a tenacia run as an eval-mode model of its family
    (``tenacia.model.build_model``).

    Returns ``(model, model_config, tokenizer_json_path)``. Only the ``[model]`` section of the
    run's config.toml is read, so a run directory copied to another machine (without its corpus)
    still serves. Raises ``CorruptCheckpoint`` naming the run directory when it holds no checkpoint
    that verifies.
    """
    run = Path(run_dir)
    cfg = run_model_config(run)
    found = latest_verified(run / "checkpoints")
    if found is None:
        raise CorruptCheckpoint(f"run {run} has no checkpoint that verifies under {run / 'checkpoints'}")
    model = build_model(cfg, init_weights=False)
    load_model_weights(model, found[0])
    model.to(device=device or "cpu", dtype=dtype).eval()
    return model, cfg, run / "tokenizer.json"
