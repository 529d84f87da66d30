"""A model's shape in Hugging Face's spelling: ``config.json`` <-> ``ModelConfig``, torch-free.

Three model types of the Llama family map (``ARCHITECTURES``): ``llama``; ``mistral`` (an
attention window, which tenacia reproduces by capping the context at the window); ``qwen2``
(biases on the q, k and v projections, ``ModelConfig.qkv_bias``, without sliding-window
attention). ``deepseek_v3`` maps to the deepseek-v3 family (``hf_deepseek.py``).

Contract: ``model_config_from_hf`` rejects what the model cannot reproduce exactly (another
architecture, rope scaling, biases other than Qwen2's, another activation, sliding-window
attention it cannot cap) with an ``HFFormatError`` naming the field, its value and what is
allowed, rather than describing a model that silently computes something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import hf_deepseek
from .config import ModelConfig
from .hf_fields import HFFormatError, require, rope_theta

__all__ = ["HFFormatError", "hf_config_from_model", "model_config_from_hf", "rope_theta"]

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"


# model_type -> the one architecture of it that loads.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM"}
# transformers' defaults (5.x, as of 4.x) for fields a config.json may leave out, where they
# differ from one model type to another.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"max_position_embeddings": 2048},
    "mistral": {"max_position_embeddings": 131072, "num_key_value_heads": 8, "sliding_window": 4096},
    "qwen2": {"max_position_embeddings": 32768, "num_key_value_heads": 32},
}


def model_config_from_hf(config: Mapping[str, Any]) -> ModelConfig:
    """A transformers ``LlamaConfig``, ``MistralConfig`` or ``Qwen2Config`` dict (a parsed
    config.json) -> ``ModelConfig``. Raises ``HFFormatError`` for anything the model cannot
    reproduce exactly.

    Mistral's ``sliding_window`` W lets each token attend to the last W positions only. tenacia
    has no windowed attention, so it caps ``max_seq_len`` at W: no sequence it runs is longer than
    the window, and there windowed and full causal attention are the same computation. A
    ``null`` window leaves the context at ``max_position_embeddings``."""
    model_type = config.get("model_type")

    if model_type == hf_deepseek.MODEL_TYPE:
        return hf_deepseek.model_config_from_hf(config)
    require(model_type in ARCHITECTURES, "model_type", model_type,
             f"one of {', '.join(repr(t) for t in [*ARCHITECTURES, hf_deepseek.MODEL_TYPE])} (the "
             "decoders tenacia reproduces exactly)")
    config = {**_DEFAULTS[model_type], **config}
    want = ARCHITECTURES[model_type]
    arch = config.get("architectures") or [want]
    require(want in arch, "architectures", arch, f"['{want}'] for model_type '{model_type}'")
    act = config.get("hidden_act", "silu")
    require(act == "silu", "hidden_act", act, "'silu' (SwiGLU)")
    if model_type == "llama":  # the others have no such switches
        for field in ("attention_bias", "mlp_bias"):
            require(not config.get(field, False), field, config.get(field), "false (no biases)")
    # layer_types marks the layers a sliding window applies to, when the model has one: a Qwen2
    # with use_sliding_window false has none (transformers then sets its window to None whatever
    # layer_types says), and Mistral's window is handled below by capping the context.
    layer_types = config.get("layer_types") or []
    if model_type == "llama":
        require(all(t == "full_attention" for t in layer_types), "layer_types", layer_types,
                 "'full_attention' for every layer (tenacia has no sliding-window attention)")
    max_seq_len = config["max_position_embeddings"]
    if model_type == "mistral":
        window = config["sliding_window"]
        require(window is None or (isinstance(window, int) and not isinstance(window, bool)
                                    and window > 0), "sliding_window", window,
                 "null, or a positive integer (tenacia then caps the context at it)")
        max_seq_len = min(max_seq_len, window or max_seq_len)
    if model_type == "qwen2":
        require(not config.get("use_sliding_window", False), "use_sliding_window",
                 config.get("use_sliding_window"),
                 "false (tenacia has no sliding-window attention; every layer attends to the "
                 "whole context)")
    dim, n_heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim")
    if head_dim is not None:
        require(head_dim * n_heads == dim, "head_dim", head_dim,
                 f"hidden_size / num_attention_heads = {dim / n_heads:g}")
    return ModelConfig(
        vocab_size=config["vocab_size"],
        dim=dim,
        n_layers=config["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads") or n_heads,
        ffn_dim=config["intermediate_size"],
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),  # transformers' default for all three
        rope_theta=rope_theta(config),
        max_seq_len=max_seq_len,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2",
    )


def hf_config_from_model(cfg: ModelConfig, *, dtype: str = "float32",
                         **token_ids: int | list[int] | None) -> dict[str, Any]:
    """``ModelConfig`` -> a config.json dict that transformers loads as ``LlamaForCausalLM``, or
    as ``Qwen2ForCausalLM`` (full attention in every layer) when ``cfg.qkv_bias`` is set, or as
    ``DeepseekV3ForCausalLM`` for the deepseek-v3 family.
    ``token_ids``: bos_token_id, eos_token_id, pad_token_id (others are rejected). Both rope
    layouts are written so that transformers 4.x and >= 5 read the same theta."""
    allowed = {"bos_token_id", "eos_token_id", "pad_token_id"}
    unknown = set(token_ids) - allowed
    if unknown:
        raise TypeError(f"unknown token id argument(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if cfg.is_moe:
        return hf_deepseek.hf_config_from_model(cfg, dtype=dtype, token_ids=token_ids)
    model_type = "qwen2" if cfg.qkv_bias else "llama"
    if model_type == "qwen2":
        own = {"use_sliding_window": False, "sliding_window": None,
                  "max_window_layers": cfg.n_layers}
    else:
        own = {"attention_bias": False, "mlp_bias": False}
    return {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        **own,  # the fields of this model type alone
        "attention_dropout": 0.0,
        "tie_word_embeddings": bool(cfg.tie_embeddings),
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": dtype,
        **{k: v for k, v in token_ids.items() if v is not None},
    }
