"""Hugging Face interop: tenacia's ``Llama`` <-> a Llama-family checkpoint directory.

A Hugging Face directory holds ``config.json`` and its weights in ``model.safetensors`` or in
shards listed by ``model.safetensors.index.json``. This module maps parameter names both ways, turns
``config.json`` into a ``ModelConfig`` and back, and loads or saves such a directory. Pickle
checkpoints (``pytorch_model.bin``) are never read.

Three model types load (``ARCHITECTURES``), all with the same parameter names:
- ``llama`` (``LlamaForCausalLM``);
- ``mistral`` (``MistralForCausalLM``): Llama's weights plus an attention window, which tenacia
  reproduces by capping the context at the window (see ``model_config_from_hf``);
- ``qwen2`` (``Qwen2ForCausalLM``): Llama plus biases on the q, k and v projections
  (``ModelConfig.qkv_bias``), without sliding-window attention.

All use the "rotate half" rotary layout, so q/k projections load without a permutation.

Contract:
- ``model_config_from_hf`` rejects what the model cannot reproduce exactly (another architecture,
  rope scaling, biases other than Qwen2's, another activation, sliding-window attention it
  cannot cap) with an ``HFFormatError`` naming the field, its value and what is allowed, rather
  than loading a model that silently computes something else.
- Loading checks every tensor's name and shape: a missing, unexpected or misshapen weight is an
  ``HFFormatError`` naming it. A tied ``lm_head.weight`` is ignored when present.
- Saving writes each file atomically (temporary file, fsync, rename) and leaves other files in
  ``out_dir`` (a tokenizer, say) alone. A tied ``lm_head`` is not stored, as transformers does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .llama import Llama, ModelConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
GENERATION_CONFIG_FILE = "generation_config.json"


class HFFormatError(ValueError):
    """A Hugging Face directory, config or state dict that tenacia cannot load faithfully."""


# tenacia name suffix inside layers.N <-> HF name suffix inside model.layers.N
_LAYER_KEYS = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wq.bias": "self_attn.q_proj.bias",  # qkv_bias models (Qwen2) only
    "attention.wk.bias": "self_attn.k_proj.bias",
    "attention.wv.bias": "self_attn.v_proj.bias",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_LAYER_KEYS_FROM_HF = {hf: ours for ours, hf in _LAYER_KEYS.items()}
_TOP_KEYS = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_TOP_KEYS_FROM_HF = {hf: ours for ours, hf in _TOP_KEYS.items()}
_OURS_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
# Buffers some older exports stored; they are recomputed, never loaded.
_HF_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
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


def hf_key(name: str) -> str:
    """tenacia parameter name -> HF name (``layers.3.attention.wq.weight`` ->
    ``model.layers.3.self_attn.q_proj.weight``). Raises ``HFFormatError`` for an unknown name."""
    if name in _TOP_KEYS:
        return _TOP_KEYS[name]
    m = _OURS_LAYER.fullmatch(name)
    if m and m.group(2) in _LAYER_KEYS:
        return f"model.layers.{m.group(1)}.{_LAYER_KEYS[m.group(2)]}"
    raise HFFormatError(f"tenacia parameter '{name}' has no Hugging Face Llama counterpart")


def tenacia_key(name: str) -> str:
    """HF parameter name -> tenacia parameter name; the inverse of ``hf_key``."""
    if name in _TOP_KEYS_FROM_HF:
        return _TOP_KEYS_FROM_HF[name]
    m = _HF_LAYER.fullmatch(name)
    if m and m.group(2) in _LAYER_KEYS_FROM_HF:
        return f"layers.{m.group(1)}.{_LAYER_KEYS_FROM_HF[m.group(2)]}"
    raise HFFormatError(
        f"weight '{name}' is not part of a Llama-family model tenacia can load (no extra "
        "modules, biases only on q/k/v_proj; expected model.embed_tokens, "
        "model.layers.N.{self_attn.{q,k,v,o}_proj.weight, self_attn.{q,k,v}_proj.bias, "
        "mlp.{gate,up,down}_proj, input_layernorm, post_attention_layernorm}, model.norm, lm_head)"
    )


def to_hf_state_dict(state: Mapping[str, Tensor], tie_embeddings: bool) -> dict[str, Tensor]:
    """tenacia state dict -> HF names. A tied output projection is left out (HF re-ties it)."""
    return {hf_key(k): v for k, v in state.items() if not (tie_embeddings and k == "output.weight")}


def from_hf_state_dict(state: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """HF state dict -> tenacia names, checked against ``cfg``: every expected weight present with
    its shape, nothing unexpected. With tied embeddings ``output.weight`` is the embedding."""
    out = {
        tenacia_key(k): v
        for k, v in state.items()
        if not _HF_IGNORED.fullmatch(k) and not (cfg.tie_embeddings and k == "lm_head.weight")
    }
    if cfg.tie_embeddings and "tok_embeddings.weight" in out:
        out["output.weight"] = out["tok_embeddings.weight"]
    expected = _expected_shapes(cfg)
    missing = [hf_key(k) for k in expected if k not in out]
    if missing:
        raise HFFormatError(
            f"missing weight(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
            f"({len(missing)} of {len(expected)}) for a {cfg.n_layers}-layer Llama"
        )
    for k in out:
        if k not in expected:
            why = ("the config has no q/k/v biases (only model_type 'qwen2' has them)"
                   if k.endswith(".bias") and not cfg.qkv_bias else f"the config has {cfg.n_layers} layers")
            raise HFFormatError(f"unexpected weight '{hf_key(k)}': {why}")
    for k, shape in expected.items():  # in model order, so the first mismatch is reported
        if tuple(out[k].shape) != shape:
            raise HFFormatError(
                f"weight '{hf_key(k)}' has shape {tuple(out[k].shape)}, but config.json implies "
                f"{shape}"
            )
    return out


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    hd, kv = cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    shapes = {"tok_embeddings.weight": (cfg.vocab_size, cfg.dim), "norm.weight": (cfg.dim,),
              "output.weight": (cfg.vocab_size, cfg.dim)}
    per_layer = {
        "attention.wq.weight": (cfg.n_heads * hd, cfg.dim),
        "attention.wk.weight": (kv, cfg.dim),
        "attention.wv.weight": (kv, cfg.dim),
        "attention.wo.weight": (cfg.dim, cfg.n_heads * hd),
        "feed_forward.w1.weight": (cfg.ffn_dim, cfg.dim),
        "feed_forward.w3.weight": (cfg.ffn_dim, cfg.dim),
        "feed_forward.w2.weight": (cfg.dim, cfg.ffn_dim),
        "attention_norm.weight": (cfg.dim,),
        "ffn_norm.weight": (cfg.dim,),
    }
    if cfg.qkv_bias:
        per_layer.update({"attention.wq.bias": (cfg.n_heads * hd,), "attention.wk.bias": (kv,),
                          "attention.wv.bias": (kv,)})
    for i in range(cfg.n_layers):
        shapes.update({f"layers.{i}.{k}": s for k, s in per_layer.items()})
    return shapes


def _require(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise HFFormatError(f"config.json field '{field}' = {value!r} is not supported: {allowed}")


def _rope_theta(config: Mapping[str, Any]) -> float:
    """rope_theta from either layout: transformers >= 5 ``rope_parameters``, or the older
    top-level ``rope_theta`` plus ``rope_scaling``. Only unscaled ("default") rope is supported."""
    params = config.get("rope_parameters")
    field = "rope_parameters"
    if params is None:
        params, field = config.get("rope_scaling") or {}, "rope_scaling"
    _require(isinstance(params, Mapping), field, params, "a table of rope parameters")
    kind = params.get("rope_type", params.get("type", "default"))
    _require(kind == "default", f"{field}.rope_type", kind,
             "only 'default' (unscaled) rotary embeddings; linear/dynamic/yarn/llama3 scaling "
             "are not implemented by tenacia's model")
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    _require(isinstance(theta, (int, float)) and theta > 0, "rope_theta", theta,
             "a positive number")
    return float(theta)


def model_config_from_hf(config: Mapping[str, Any]) -> ModelConfig:
    """A transformers ``LlamaConfig``, ``MistralConfig`` or ``Qwen2Config`` dict (a parsed
    config.json) -> ``ModelConfig``. Raises ``HFFormatError`` for anything the model cannot
    reproduce exactly.

    Mistral's ``sliding_window`` W lets each token attend to the last W positions only. tenacia
    has no windowed attention, so it caps ``max_seq_len`` at W: no sequence it runs is longer than
    the window, and there windowed and full causal attention are the same computation. A
    ``null`` window leaves the context at ``max_position_embeddings``."""
    model_type = config.get("model_type")
    _require(model_type in ARCHITECTURES, "model_type", model_type,
             f"one of {', '.join(repr(t) for t in ARCHITECTURES)} (the Llama-family decoders "
             "tenacia reproduces exactly)")
    config = {**_DEFAULTS[model_type], **config}
    want = ARCHITECTURES[model_type]
    arch = config.get("architectures") or [want]
    _require(want in arch, "architectures", arch, f"['{want}'] for model_type '{model_type}'")
    act = config.get("hidden_act", "silu")
    _require(act == "silu", "hidden_act", act, "'silu' (SwiGLU)")
    if model_type == "llama":  # the others have no such switches
        for field in ("attention_bias", "mlp_bias"):
            _require(not config.get(field, False), field, config.get(field), "false (no biases)")
    # layer_types marks the layers a sliding window applies to, when the model has one: a Qwen2
    # with use_sliding_window false has none (transformers then sets its window to None whatever
    # layer_types says), and Mistral's window is handled below by capping the context.
    layer_types = config.get("layer_types") or []
    if model_type == "llama":
        _require(all(t == "full_attention" for t in layer_types), "layer_types", layer_types,
                 "'full_attention' for every layer (tenacia has no sliding-window attention)")
    max_seq_len = config["max_position_embeddings"]
    if model_type == "mistral":
        window = config["sliding_window"]
        _require(window is None or (isinstance(window, int) and not isinstance(window, bool)
                                    and window > 0), "sliding_window", window,
                 "null, or a positive integer (tenacia then caps the context at it)")
        max_seq_len = min(max_seq_len, window or max_seq_len)
    if model_type == "qwen2":
        _require(not config.get("use_sliding_window", False), "use_sliding_window",
                 config.get("use_sliding_window"),
                 "false (tenacia has no sliding-window attention; every layer attends to the "
                 "whole context)")
    dim, n_heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim")
    if head_dim is not None:
        _require(head_dim * n_heads == dim, "head_dim", head_dim,
                 f"hidden_size / num_attention_heads = {dim / n_heads:g}")
    return ModelConfig(
        vocab_size=config["vocab_size"],
        dim=dim,
        n_layers=config["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads") or n_heads,
        ffn_dim=config["intermediate_size"],
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),  # transformers' default for all three
        rope_theta=_rope_theta(config),
        max_seq_len=max_seq_len,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2",
    )


def hf_config_from_model(cfg: ModelConfig, *, dtype: torch.dtype = torch.float32,
                         **token_ids: int | list[int] | None) -> dict[str, Any]:
    """``ModelConfig`` -> a config.json dict that transformers loads as ``LlamaForCausalLM``, or
    as ``Qwen2ForCausalLM`` (full attention in every layer) when ``cfg.qkv_bias`` is set.
    ``token_ids``: bos_token_id, eos_token_id, pad_token_id (others are rejected). Both rope
    layouts are written so that transformers 4.x and >= 5 read the same theta."""
    allowed = {"bos_token_id", "eos_token_id", "pad_token_id"}
    unknown = set(token_ids) - allowed
    if unknown:
        raise TypeError(f"unknown token id argument(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
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
        "torch_dtype": str(dtype).removeprefix("torch."),
        **{k: v for k, v in token_ids.items() if v is not None},
    }


def read_hf_state_dict(path: str | Path) -> dict[str, Tensor]:
    """All tensors of a HF directory: ``model.safetensors`` or the shards named by
    ``model.safetensors.index.json``. Never unpickles."""
    path = Path(path)
    index = path / WEIGHTS_INDEX_FILE
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (path / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        hint = (f" ({', '.join(pickles)} found: pickle checkpoints are not loaded; convert them "
                "to safetensors)") if pickles else ""
        raise HFFormatError(f"{path} has neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE}{hint}")
    state: dict[str, Tensor] = {}
    for name in files:
        if not (path / name).is_file():
            raise HFFormatError(f"{path / WEIGHTS_INDEX_FILE} names shard '{name}', which is missing")
        with safe_open(path / name, framework="pt") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    return state


def load_hf_dir(path: str | Path, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> Llama:
    """A Hugging Face Llama-family directory -> ``Llama`` in eval mode, parameters in ``dtype`` on
    ``device`` (default cpu). Raises ``HFFormatError`` for an unsupported config or weights."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise HFFormatError(f"{path} is not a Hugging Face model directory: no {CONFIG_FILE}")
    cfg = model_config_from_hf(json.loads((path / CONFIG_FILE).read_text()))
    state = from_hf_state_dict(read_hf_state_dict(path), cfg)
    model = Llama(cfg, init_weights=False)
    model.load_state_dict(state, strict=True)
    model.to(device=device)
    # Cast parameters only: the rotary table buffers stay float32.
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model.eval()


def _write_atomic(target: Path, write: Any) -> None:
    """Write through ``write(tmp_path)`` to a temporary sibling, fsync, rename onto ``target``."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # safetensors creates 0600 files; an export is meant to be shared
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(target: Path, data: Mapping[str, Any]) -> None:
    _write_atomic(target, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def save_hf_dir(model: Llama, out_dir: str | Path, *, bos_token_id: int | None = None,
                eos_token_id: int | Iterable[int] | None = None,
                pad_token_id: int | None = None) -> Path:
    """Write ``model`` as a transformers ``LlamaForCausalLM`` directory (``Qwen2ForCausalLM``
    when it has q/k/v biases): config.json,
    model.safetensors (in the parameters' dtype, tied lm_head left out) and
    generation_config.json. Other files in ``out_dir`` are kept. Returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eos = list(eos_token_id) if isinstance(eos_token_id, Iterable) else eos_token_id
    ids = {"bos_token_id": bos_token_id, "eos_token_id": eos, "pad_token_id": pad_token_id}
    cfg = model.cfg
    state = to_hf_state_dict(model.state_dict(), bool(cfg.tie_embeddings))
    # safetensors refuses shared or strided storage: give each tensor its own contiguous copy.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    dtype = next(iter(tensors.values())).dtype
    _write_json(out / CONFIG_FILE, hf_config_from_model(cfg, dtype=dtype, **ids))
    _write_atomic(out / WEIGHTS_FILE, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    _write_json(out / GENERATION_CONFIG_FILE, {k: v for k, v in ids.items() if v is not None})
    return out
