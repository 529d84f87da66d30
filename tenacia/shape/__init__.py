"""The model's shape without its weights, torch-free.

- ``config.py``: ``ModelConfig`` (the ``[model]`` section of a run) and the named presets;
- ``deepseek.py``: the deepseek-v3 family's own sections (latent attention, experts) and counts;
- ``hf.py``: the same shape as a Hugging Face ``config.json``, both ways.

``tenacia.model`` builds the network from it, checkpoints and the server read it back, and the
planner sizes a tenacia model with it without importing torch.
"""

from .config import PRESETS, ModelConfig

__all__ = ["PRESETS", "ModelConfig"]
