"""The Llama-family decoder, its presets and its Hugging Face adapter."""

from .llama import Llama, ModelConfig, loss_fn

__all__ = ["Llama", "ModelConfig", "loss_fn"]
