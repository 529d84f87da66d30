"""`tenacia export RUN_DIR --out DIR`: a run's newest verified checkpoint as a standard Hugging
Face Llama directory (Qwen2 for a model with q/k/v biases, DeepSeek-V3 for the deepseek-v3
family, MTP layer included), for transformers, vLLM, vllm-ascend and SGLang.

Files: ``config.json``, ``model.safetensors`` (float32), ``generation_config.json`` (end-of-turn
and end-of-text as stop tokens), ``tokenizer.json``, ``tokenizer_config.json`` (with the ChatML
chat template, for loaders that read it there) and ``chat_template.jinja`` (for those that read
the file). transformers' ``AutoModelForCausalLM`` computes the same logits as tenacia's model
(tests/checkpoint/test_export.py checks 1e-4 in float32; test_export_deepseek.py 1e-5).

Contract: the directory appears whole or not at all (``tenacia.storage.atomic_directory``); an
existing ``DIR`` is replaced only if it is empty or an earlier export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..config import ConfigError
from ..data.tokenizer import CHAT_TEMPLATE, ENDOFTEXT, IM_END, IM_START, PAD
from ..model.hf import CONFIG_FILE, save_hf_dir
from ..storage import atomic_directory
from .inference import load_run_for_inference


def tokenizer_config(tokenizer: Tokenizer, max_len: int) -> dict:
    """transformers' tokenizer_config.json for a byte-level BPE with ChatML special tokens."""
    has = lambda t: tokenizer.token_to_id(t) is not None  # noqa: E731
    eos = IM_END if has(IM_END) else ENDOFTEXT
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": IM_START if has(IM_START) else None,
        "eos_token": eos,
        "pad_token": PAD if has(PAD) else eos,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "chat_template": CHAT_TEMPLATE,
    }


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the export (see module docstring); returns its path."""
    out = Path(out_dir).resolve()
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / CONFIG_FILE).is_file())):
        raise ConfigError("--out", str(out), "a new or empty directory, or an earlier export; this one "
                          "exists and is not an earlier export")
    model, cfg, tokenizer_path = load_run_for_inference(run_dir, "cpu", torch.float32)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ids = {t: tokenizer.token_to_id(t) for t in (ENDOFTEXT, IM_START, IM_END, PAD)}
    eos = [i for i in (ids[IM_END], ids[ENDOFTEXT]) if i is not None]

    with atomic_directory(out) as build:
        tmp = build.tmp
        save_hf_dir(model, tmp, bos_token_id=ids[IM_START], eos_token_id=eos or None,
                    pad_token_id=ids[PAD] if ids[PAD] is not None else (eos[0] if eos else None))
        shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
        config = tokenizer_config(tokenizer, cfg.max_seq_len)
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "special_tokens_map.json").write_text(json.dumps(
            {k: config[k] for k in ("bos_token", "eos_token", "pad_token") if config[k]}, indent=2) + "\n")
        (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return out
