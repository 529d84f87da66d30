"""The ``deepseek-v3`` family: latent attention, DeepSeekMoE and multi-token prediction.

- ``mla.py``: multi-head latent attention;
- ``moe.py``: routing (sigmoid, group-limited top-k, balancing bias), grouped experts;
- ``model.py``: the decoder ``DeepSeekV3`` with its MTP modules and training loss;
- ``hf.py``: Hugging Face ``deepseek_v3`` weights in and out.
"""

from .model import DeepSeekV3

__all__ = ["DeepSeekV3"]
