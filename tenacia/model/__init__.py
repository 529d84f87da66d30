"""The network, knowing nothing of parallelism, devices or serving.

- ``llama.py``: the Llama-family decoder (its shape is ``tenacia.shape.ModelConfig``) and the
  one seam inference engines use, ``AttentionCache``;
- ``hf.py``: Hugging Face weights in and out (names, shapes, safetensors directories);
- ``generate.py``: KV-cached sampling for a quick look at what a model learnt.
"""

from .llama import Llama, loss_fn

__all__ = ["Llama", "loss_fn"]
