"""The network, knowing nothing of parallelism, devices or serving.

- ``llama.py``: the Llama-family decoder (its shape is ``tenacia.shape.ModelConfig``) and the
  one seam inference engines use, ``AttentionCache``;
- ``deepseek/``: the deepseek-v3 family (latent attention, mixture of experts, multi-token
  prediction) and its Hugging Face weights;
- ``hf.py``: Hugging Face weights in and out (names, shapes, safetensors directories);
- ``generate.py``: KV-cached sampling for a quick look at what a model learnt.
"""

from torch import nn

from ..shape import ModelConfig
from .deepseek import DeepSeekV3
from .llama import Llama, loss_fn


def build_model(cfg: ModelConfig, init_weights: bool = True) -> nn.Module:
    """The network of ``cfg.family``: ``Llama`` or ``DeepSeekV3``."""
    return DeepSeekV3(cfg, init_weights) if cfg.is_moe else Llama(cfg, init_weights)


__all__ = ["DeepSeekV3", "Llama", "build_model", "loss_fn"]
