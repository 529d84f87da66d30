"""Hugging Face ``deepseek_v3`` weights <-> ``DeepSeekV3``'s state dict.

The published layout (DeepSeek's checkpoints, what vLLM and SGLang read, what transformers'
``save_pretrained`` writes): ``model.layers.N.self_attn.{q_proj | q_a_proj, q_a_layernorm,
q_b_proj}``, ``kv_a_proj_with_mqa``, ``kv_a_layernorm``, ``kv_b_proj``, ``o_proj``; dense layers
``mlp.{gate,up,down}_proj``; MoE layers ``mlp.gate.weight``, ``mlp.gate.e_score_correction_bias``
(the balancing bias), ``mlp.experts.E.{gate,up,down}_proj``, ``mlp.shared_experts.*``. MTP module
k is the extra layer ``model.layers.{num_hidden_layers + k}`` with the same block names plus
``enorm``, ``hnorm``, ``eh_proj``, ``shared_head.norm`` and copies of the shared
``embed_tokens`` and ``shared_head.head`` (transformers' model drops that layer on load).

Rotary rows: tenacia rotates halves (pair i = rows i and i + r/2); the checkpoint stores the
rotary rows of each query head and of the shared key interleaved (pair i = rows 2i and 2i + 1),
which transformers (``rope_interleave``) and vLLM undo. Saving permutes to that order, loading
back; a checkpoint with ``rope_interleave: false`` loads unpermuted.

Contract: loading accepts per-expert weights or transformers' in-memory fused layout
(``mlp.experts.gate_up_proj``, ``mlp.experts.down_proj``), checks every name and shape against
the config (a missing, unexpected or misshapen weight is an ``HFFormatError`` naming it), and
requires the MTP copies of the embedding and head to equal the shared ones. A directory without
the MTP layer (transformers' own save) loads as a model without MTP modules.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from ...shape import ModelConfig
from ...shape.hf import HFFormatError
from .model import DeepSeekV3

# tenacia suffix inside a block <-> HF suffix inside model.layers.N
_BLOCK_KEYS = {
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wq_a.weight": "self_attn.q_a_proj.weight",
    "attention.q_norm.weight": "self_attn.q_a_layernorm.weight",
    "attention.wq_b.weight": "self_attn.q_b_proj.weight",
    "attention.wkv_a.weight": "self_attn.kv_a_proj_with_mqa.weight",
    "attention.kv_norm.weight": "self_attn.kv_a_layernorm.weight",
    "attention.wkv_b.weight": "self_attn.kv_b_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.router.weight": "mlp.gate.weight",
    "feed_forward.router.expert_bias": "mlp.gate.e_score_correction_bias",
    "feed_forward.shared.w1.weight": "mlp.shared_experts.gate_proj.weight",
    "feed_forward.shared.w3.weight": "mlp.shared_experts.up_proj.weight",
    "feed_forward.shared.w2.weight": "mlp.shared_experts.down_proj.weight",
}
_EXPERT_KEYS = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}  # experts.wX[e] <-> experts.e.X.weight
_MTP_KEYS = {"enorm.weight": "enorm.weight", "hnorm.weight": "hnorm.weight",
             "eh_proj.weight": "eh_proj.weight", "norm.weight": "shared_head.norm.weight"}
_TOP_KEYS = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
_FROM_HF_TOP = {hf: ours for ours, hf in _TOP_KEYS.items()}
_FROM_HF_BLOCK = {hf: ours for ours, hf in _BLOCK_KEYS.items()}
_FROM_HF_EXPERT = {hf: ours for ours, hf in _EXPERT_KEYS.items()}
_FROM_HF_MTP = {hf: ours for ours, hf in _MTP_KEYS.items()}
_ROPE_ROWS = ("attention.wq.weight", "attention.wq_b.weight", "attention.wkv_a.weight")
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_HF_EXPERT = re.compile(r"mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight")


def _interleave(r: int) -> Tensor:
    """Row order of the checkpoint's rotary rows in terms of tenacia's: [0, r/2, 1, r/2 + 1, ...]."""
    half = torch.arange(r // 2)
    return torch.stack([half, half + r // 2], dim=1).reshape(-1)


def _permute_rope(name: str, w: Tensor, cfg: ModelConfig, order: Tensor) -> Tensor:
    """Rows of a query or latent projection with their rotary rows put in ``order``."""
    a = cfg.mla
    if name.endswith("wkv_a.weight"):  # (kv_lora_rank + r, dim): the shared key's rows last
        return torch.cat([w[:a.kv_lora_rank], w[a.kv_lora_rank:][order]])
    heads = w.view(cfg.n_heads, a.qk_head_dim, -1)  # each head's rows: n nope, then r rotary
    return torch.cat([heads[:, :a.qk_nope_head_dim], heads[:, a.qk_nope_head_dim:][:, order]], dim=1).reshape(w.shape)


def _blocks(cfg: ModelConfig) -> list[tuple[str, int]]:
    """(tenacia prefix, HF layer index) of every block, MTP modules last."""
    return ([(f"layers.{i}.", i) for i in range(cfg.n_layers)]
            + [(f"mtp.{k}.block.", cfg.n_layers + k) for k in range(cfg.mtp_depth)])


def to_hf_state_dict(state: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """``DeepSeekV3.state_dict()`` -> the published layout (module docstring)."""
    order, out = _interleave(cfg.mla.qk_rope_head_dim), {}
    for ours, hf in _TOP_KEYS.items():
        if not (ours == "output.weight" and cfg.tie_embeddings):
            out[hf] = state[ours]
    for prefix, n in _blocks(cfg):
        for ours, hf in _BLOCK_KEYS.items():
            if prefix + ours in state:
                w = state[prefix + ours]
                out[f"model.layers.{n}.{hf}"] = _permute_rope(ours, w, cfg, order) if ours in _ROPE_ROWS else w
        for ours, hf in _EXPERT_KEYS.items():
            if f"{prefix}feed_forward.experts.{ours}" in state:
                for e, w in enumerate(state[f"{prefix}feed_forward.experts.{ours}"]):
                    out[f"model.layers.{n}.mlp.experts.{e}.{hf}.weight"] = w
    for k in range(cfg.mtp_depth):
        n = cfg.n_layers + k
        out.update({f"model.layers.{n}.{hf}": state[f"mtp.{k}.{ours}"] for ours, hf in _MTP_KEYS.items()})
        out[f"model.layers.{n}.embed_tokens.weight"] = state["tok_embeddings.weight"]
        out[f"model.layers.{n}.shared_head.head.weight"] = state["output.weight"]
    return out


def _tenacia_name(name: str, cfg: ModelConfig) -> tuple[str, int | None]:
    """HF name -> (tenacia name, expert index or None); expert weights name their stack."""
    if name in _FROM_HF_TOP:
        return _FROM_HF_TOP[name], None
    m = _HF_LAYER.fullmatch(name)
    if m:
        n, rest = int(m.group(1)), m.group(2)
        prefix = f"layers.{n}." if n < cfg.n_layers else f"mtp.{n - cfg.n_layers}.block."
        if n >= cfg.n_layers and rest in _FROM_HF_MTP:
            return f"mtp.{n - cfg.n_layers}.{_FROM_HF_MTP[rest]}", None
        if rest in _FROM_HF_BLOCK:
            return prefix + _FROM_HF_BLOCK[rest], None
        if e := _HF_EXPERT.fullmatch(rest):
            return f"{prefix}feed_forward.experts.{_FROM_HF_EXPERT[e.group(2)]}", int(e.group(1))
        if rest in ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"):
            return prefix + "feed_forward.experts." + rest.rpartition(".")[2], None
    raise HFFormatError(f"weight '{name}' is not part of a DeepSeek-V3 model tenacia can load")


def from_hf_state_dict(state: Mapping[str, Tensor], cfg: ModelConfig,
                       interleaved: bool = True) -> tuple[dict[str, Tensor], ModelConfig]:
    """The published (or fused) layout -> (tenacia state dict, ``cfg`` with ``mtp_depth`` 0 when
    the checkpoint has no MTP layer), checked as the module docstring says."""
    if cfg.mtp_depth and not any(k.startswith(f"model.layers.{cfg.n_layers}.") for k in state):
        cfg = dataclasses.replace(cfg, mtp_depth=0)
    order = torch.argsort(_interleave(cfg.mla.qk_rope_head_dim))
    out: dict[str, Tensor] = {}
    experts: dict[str, dict[int, Tensor]] = {}
    shared = {}  # MTP copies of the embedding and head
    for name, w in state.items():
        layer = _HF_LAYER.fullmatch(name)
        n = int(layer.group(1)) if layer else -1
        if n >= cfg.n_layers + cfg.mtp_depth:
            raise HFFormatError(f"unexpected weight '{name}': the config has {cfg.n_layers} layers and "
                                f"{cfg.mtp_depth} MTP layers")
        if n >= cfg.n_layers and layer.group(2) in ("embed_tokens.weight", "shared_head.head.weight"):
            shared[name] = w
            continue
        ours, e = _tenacia_name(name, cfg)
        if e is not None:
            experts.setdefault(ours, {})[e] = w
        elif ours.endswith(("gate_up_proj", "down_proj")):
            prefix = ours.rpartition(".")[0]
            if ours.endswith("gate_up_proj"):
                out[f"{prefix}.w1"], out[f"{prefix}.w3"] = w.chunk(2, dim=1)
            else:
                out[f"{prefix}.w2"] = w
        else:
            out[ours] = _permute_rope(ours, w, cfg, order) if interleaved and ours.endswith(_ROPE_ROWS) else w
    for ours, by_index in experts.items():
        n = cfg.moe.n_routed_experts
        missing = sorted(set(range(n)) - set(by_index))
        if missing or len(by_index) != n:
            raise HFFormatError(f"expert weights for '{ours}': experts {missing[:5]} missing or extra ones "
                                f"(the config has {n} routed experts)")
        out[ours] = torch.stack([by_index[i] for i in range(n)])
    if cfg.tie_embeddings and "tok_embeddings.weight" in out:
        out["output.weight"] = out["tok_embeddings.weight"]
    _check(out, cfg)
    for name, w in shared.items():
        main = out["tok_embeddings.weight" if name.endswith("embed_tokens.weight") else "output.weight"]
        if not torch.equal(w, main):
            raise HFFormatError(f"weight '{name}' differs from the main model's: tenacia's MTP modules share "
                                "the embedding and the output head")
    return out, cfg


def _check(out: Mapping[str, Tensor], cfg: ModelConfig) -> None:
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in DeepSeekV3(cfg, init_weights=False).state_dict().items()}
    missing = [k for k in expected if k not in out]
    if missing:
        raise HFFormatError(f"missing weight(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                            f"({len(missing)} of {len(expected)}, tenacia names) for this DeepSeek-V3 config")
    for k, w in out.items():
        if k not in expected:
            raise HFFormatError(f"unexpected weight (tenacia name '{k}') for this DeepSeek-V3 config")
        if tuple(w.shape) != expected[k]:
            raise HFFormatError(f"weight (tenacia name '{k}') has shape {tuple(w.shape)}, but config.json "
                                f"implies {expected[k]}")
