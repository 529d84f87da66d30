"""The deepseek-v3 family in Hugging Face's spelling: a ``deepseek_v3`` config.json <->
``ModelConfig``, torch-free (``hf.py`` dispatches here on ``model_type``).

Contract, as for the Llama family: ``model_config_from_hf`` rejects what tenacia's model cannot
reproduce exactly with an ``HFFormatError`` naming the field: rotary scaling (the published
DeepSeek-V3 uses YaRN; tenacia has plain rotary only), quantized weights (the published FP8
checkpoint: dequantize first), biases, softmax or greedy routing (DeepSeek-V2's), unnormalised
routing weights, MoE layers at a frequency other than every layer. ``num_key_value_heads`` is
read and ignored: latent attention has one key and value per head whatever it says.

Training-only fields: tenacia's export writes ``bias_update_speed`` and ``mtp_loss_weight`` beside
Hugging Face's keys (transformers and vLLM ignore keys they do not know), so an export loads back
with the values it trained with; a config.json without them (one made by transformers) takes
them, and ``balance_loss_weight`` unless ``aux_loss_alpha`` is there, from the
``deepseek-v3-671b`` preset, the values of the technical report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import ModelConfig
from .deepseek import MLAConfig, MoEConfig
from .hf_fields import HFFormatError, rope_theta

MODEL_TYPE = "deepseek_v3"
ARCHITECTURE = "DeepseekV3ForCausalLM"
# transformers' DeepseekV3Config defaults (5.x): those of the 671B model.
DEFAULTS: dict[str, Any] = {
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_hidden_layers": 61, "num_attention_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
    "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "qk_nope_head_dim": 128, "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8,
    "first_k_dense_replace": 3, "norm_topk_prob": True, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_interleave": True, "num_nextn_predict_layers": 1,
}
# field -> the one value tenacia reproduces, and why.
_FIXED: dict[str, tuple[Any, str]] = {
    "hidden_act": ("silu", "'silu' (SwiGLU experts)"),
    "attention_bias": (False, "false (no biases)"),
    "norm_topk_prob": (True, "true (the chosen experts' weights are normalised)"),
    "scoring_func": ("sigmoid", "'sigmoid' (DeepSeek-V3 affinities)"),
    "topk_method": ("noaux_tc", "'noaux_tc' (group-limited top-k with the balancing bias)"),
    "moe_layer_freq": (1, "1 (every layer after the dense ones is an MoE layer)"),
    "quantization_config": (None, "absent: quantized (FP8) weights are not loaded; dequantize them first"),
}


def _require(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise HFFormatError(f"config.json field '{field}' = {value!r} is not supported: {allowed}")


def rope_interleaved(config: Mapping[str, Any]) -> bool:
    """Whether the checkpoint stores rotary rows interleaved (transformers' default)."""
    return bool(config.get("rope_interleave", DEFAULTS["rope_interleave"]))


def model_config_from_hf(config: Mapping[str, Any]) -> ModelConfig:
    """A ``deepseek_v3`` config.json dict -> ``ModelConfig`` (module docstring)."""
    arch = config.get("architectures") or [ARCHITECTURE]
    _require(ARCHITECTURE in arch, "architectures", arch, f"['{ARCHITECTURE}'] for model_type '{MODEL_TYPE}'")
    for field, (value, allowed) in _FIXED.items():
        if field in config:
            _require(config[field] == value, field, config[field], allowed)
    c = {**DEFAULTS, **config}
    theta = rope_theta(config)
    return ModelConfig(
        preset="deepseek-v3-671b", family="deepseek-v3", vocab_size=c["vocab_size"], dim=c["hidden_size"],
        n_layers=c["num_hidden_layers"], n_heads=c["num_attention_heads"], n_kv_heads=c["num_attention_heads"],
        ffn_dim=c["intermediate_size"], norm_eps=float(c["rms_norm_eps"]), rope_theta=theta,
        max_seq_len=c["max_position_embeddings"], tie_embeddings=bool(c["tie_word_embeddings"]),
        mla=MLAConfig(q_lora_rank=c["q_lora_rank"] or 0, kv_lora_rank=c["kv_lora_rank"],
                      qk_nope_head_dim=c["qk_nope_head_dim"], qk_rope_head_dim=c["qk_rope_head_dim"],
                      v_head_dim=c["v_head_dim"]),
        moe=MoEConfig(n_dense_layers=c["first_k_dense_replace"], n_routed_experts=c["n_routed_experts"],
                      n_shared_experts=c["n_shared_experts"] or 0, top_k=c["num_experts_per_tok"],
                      n_expert_groups=c["n_group"] or 1, n_limited_groups=c["topk_group"] or 1,
                      expert_ffn_dim=c["moe_intermediate_size"], route_scale=float(c["routed_scaling_factor"]),
                      balance_loss_weight=float(c["aux_loss_alpha"]) if "aux_loss_alpha" in c else None,
                      bias_update_speed=_optional_float(c, "bias_update_speed")),
        mtp_depth=c["num_nextn_predict_layers"], mtp_loss_weight=_optional_float(c, "mtp_loss_weight"),
    )


def _optional_float(config: Mapping[str, Any], key: str) -> float | None:
    """``config[key]`` as a float, or None (the preset's value) where it is absent."""
    value = config.get(key)
    return None if value is None else float(value)


def hf_config_from_model(cfg: ModelConfig, *, dtype: str, token_ids: Mapping[str, Any]) -> dict[str, Any]:
    """A deepseek-v3 ``ModelConfig`` -> config.json for transformers' ``DeepseekV3ForCausalLM``
    (rotary rows interleaved, MTP modules counted in ``num_nextn_predict_layers``)."""
    a, m = cfg.mla, cfg.moe
    return {
        "architectures": [ARCHITECTURE], "model_type": MODEL_TYPE,
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "intermediate_size": cfg.ffn_dim,
        "moe_intermediate_size": m.expert_ffn_dim, "num_hidden_layers": cfg.n_layers,
        "num_nextn_predict_layers": cfg.mtp_depth, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_heads, "n_shared_experts": m.n_shared_experts,
        "n_routed_experts": m.n_routed_experts, "routed_scaling_factor": m.route_scale,
        "kv_lora_rank": a.kv_lora_rank, "q_lora_rank": a.q_lora_rank or None,
        "qk_rope_head_dim": a.qk_rope_head_dim, "v_head_dim": a.v_head_dim, "qk_nope_head_dim": a.qk_nope_head_dim,
        "n_group": m.n_expert_groups, "topk_group": m.n_limited_groups, "num_experts_per_tok": m.top_k,
        "first_k_dense_replace": m.n_dense_layers, "moe_layer_freq": 1, "norm_topk_prob": True,
        "scoring_func": "sigmoid", "topk_method": "noaux_tc", "aux_loss_alpha": m.balance_loss_weight,
        "bias_update_speed": m.bias_update_speed, "mtp_loss_weight": cfg.mtp_loss_weight,  # tenacia's own
        "seq_aux": True, "hidden_act": "silu", "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta}, "rope_interleave": True,
        "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": bool(cfg.tie_embeddings),
        "initializer_range": 0.02, "use_cache": True, "torch_dtype": dtype,
        **{k: v for k, v in token_ids.items() if v is not None},
    }
