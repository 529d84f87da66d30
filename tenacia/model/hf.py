"""Hugging Face weights: tenacia's ``Llama`` <-> a Llama-family checkpoint directory, and
``DeepSeekV3`` <-> a ``deepseek_v3`` one (its names in ``deepseek/hf.py``).

A Hugging Face directory holds ``config.json`` (mapped to a ``ModelConfig`` by
``tenacia.shape.hf``, which also says which model types load) and its weights in
``model.safetensors`` or in shards listed by ``model.safetensors.index.json``. This module maps
parameter names both ways and loads or saves such a directory. Pickle checkpoints
(``pytorch_model.bin``) are never read. All three model types use the "rotate half" rotary
layout, so q/k projections load without a permutation.

Contract:
- Loading checks every tensor's name and shape: a missing, unexpected or misshapen weight is an
  ``HFFormatError`` naming it. A tied ``lm_head.weight`` is ignored when present.
- Saving writes each file atomically (``tenacia.storage``) and leaves other files in
  ``out_dir`` (a tokenizer, say) alone. A tied ``lm_head`` is not stored, as transformers does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..shape import ModelConfig
from ..shape.hf import (
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    HFFormatError,
    hf_config_from_model,
    model_config_from_hf,
)
from ..shape.hf_deepseek import rope_interleaved
from ..storage import atomic_write, atomic_write_json
from . import build_model
from .deepseek import hf as deepseek_hf

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"


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
                dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A Hugging Face Llama-family directory -> ``Llama`` (a ``deepseek_v3`` one ->
    ``DeepSeekV3``) in eval mode, parameters in ``dtype`` on ``device`` (default cpu). Raises
    ``HFFormatError`` for an unsupported config or weights."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise HFFormatError(f"{path} is not a Hugging Face model directory: no {CONFIG_FILE}")
    config = json.loads((path / CONFIG_FILE).read_text())
    cfg = model_config_from_hf(config)
    if cfg.is_moe:
        state, cfg = deepseek_hf.from_hf_state_dict(read_hf_state_dict(path), cfg, rope_interleaved(config))
    else:
        state = from_hf_state_dict(read_hf_state_dict(path), cfg)
    model = build_model(cfg, init_weights=False)
    model.load_state_dict(state, strict=True)
    model.to(device=device)
    # Cast parameters only: the rotary tables and balancing biases (buffers) stay float32.
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model.eval()


def save_hf_dir(model: torch.nn.Module, out_dir: str | Path, *, bos_token_id: int | None = None,
                eos_token_id: int | Iterable[int] | None = None,
                pad_token_id: int | None = None) -> Path:
    """Write ``model`` as a transformers ``LlamaForCausalLM`` directory (``Qwen2ForCausalLM``
    when it has q/k/v biases, ``DeepseekV3ForCausalLM`` for a ``DeepSeekV3``): config.json,
    model.safetensors (in the parameters' dtype, tied lm_head left out) and
    generation_config.json. Other files in ``out_dir`` are kept. Returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eos = list(eos_token_id) if isinstance(eos_token_id, Iterable) else eos_token_id
    ids = {"bos_token_id": bos_token_id, "eos_token_id": eos, "pad_token_id": pad_token_id}
    cfg = model.cfg
    if cfg.is_moe:
        state = deepseek_hf.to_hf_state_dict(model.state_dict(), cfg)
    else:
        state = to_hf_state_dict(model.state_dict(), bool(cfg.tie_embeddings))
    # safetensors refuses shared or strided storage: give each tensor its own contiguous copy.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    dtype = next(iter(tensors.values())).dtype
    dtype_name = str(dtype).removeprefix("torch.")
    atomic_write_json(out / CONFIG_FILE, hf_config_from_model(cfg, dtype=dtype_name, **ids), indent=2)
    atomic_write(out / WEIGHTS_FILE, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    atomic_write_json(out / GENERATION_CONFIG_FILE, {k: v for k, v in ids.items() if v is not None}, indent=2)
    return out
