"""Tokenizers: a byte-level BPE trained on the corpus, an existing tokenizer.json, or SmolLM2's.

A trained tokenizer is byte-level BPE (GPT-2 style: every byte is a base token, so any text
encodes and decodes back unchanged) with four special tokens reserved at fixed ids, the
end-of-text separator and the ChatML roles, so a chat model and its template can be exported
later without changing the vocabulary:

    0 <|endoftext|>   1 <|im_start|>   2 <|im_end|>   3 <|pad|>

It is saved as a ``tokenizer.json`` that ``transformers.PreTrainedTokenizerFast(tokenizer_file=...)``
loads, and cached under ``<cache>/tokenizers/<key>/tokenizer.json`` where ``key`` hashes the
corpus fingerprint, the vocabulary size, ``ALGORITHM_VERSION`` and the ``tokenizers`` version:
the same corpus never trains twice. Training is deterministic (same corpus, same file).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..config import ConfigError
from ..storage import atomic_write
from .corpus import Corpus

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, PAD)  # a token's id is its index here
ENDOFTEXT_ID, IM_START_ID, IM_END_ID, PAD_ID = range(len(SPECIAL_TOKENS))
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte plus the special tokens, before any merge

# ChatML, the shape of SmolLM2's template without its default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Bump when train_bpe changes what it produces for the same corpus: cached tokenizers are keyed by it.
ALGORITHM_VERSION = 1
# Names that an existing tokenizer may give its document separator, tried in order.
END_OF_TEXT_NAMES = (ENDOFTEXT, "<|end_of_text|>", "</s>", "<eos>")


@dataclass(frozen=True, slots=True)
class ResolvedTokenizer:
    """A tokenizer ready to use, and the file it lives in."""

    tokenizer: Tokenizer
    path: Path  # its tokenizer.json (the trainer copies it into the run directory)
    sha256: str  # of the tokenizer.json bytes: the tokenizer's identity in cache keys
    end_of_text_id: int  # separates documents in the token stream
    id_bound: int  # largest token id + 1 (at most the model's vocab_size)
    trained: bool  # True when it was trained by this call (not loaded from the cache or a file)


def train_bpe(documents: Sequence[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE with at most ``vocab_size`` tokens (fewer when the corpus runs out of
    pairs to merge), ``SPECIAL_TOKENS`` at ids 0..3."""
    if vocab_size < MIN_VOCAB:
        raise ConfigError("model.vocab_size", vocab_size,
                          f"at least {MIN_VOCAB} for a byte-level BPE (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer, length=len(documents))
    return tokenizer


def resolve_tokenizer(spec: str, corpus: Corpus, vocab_size: int, cache_dir: Path) -> ResolvedTokenizer:
    """The tokenizer ``DataConfig.tokenizer`` names: ``"train"`` (trained on ``corpus``, or taken
    from the cache), ``"smollm2"``, or a path to a tokenizer.json. Its vocabulary must fit in the
    model's ``vocab_size``."""
    if spec == "train":
        return _trained(corpus, vocab_size, cache_dir)
    if spec == "smollm2":
        # Imported here: converting SmolLM2 is slow and needs transformers.
        from .smollm2 import SmolLM2Unavailable, smollm2_dir

        try:
            path = Path(smollm2_dir()) / "tokenizer.json"
        except SmolLM2Unavailable as e:
            raise ConfigError("data.tokenizer", spec, f"SmolLM2's tokenizer, which is not available here: {e}") from None
    else:
        path = Path(spec).expanduser()
    return _loaded(path, spec, vocab_size)


def _cache_key(corpus: Corpus, vocab_size: int) -> str:
    key = {"corpus": corpus.fingerprint, "vocab_size": vocab_size, "algorithm": ALGORITHM_VERSION,
           "tokenizers": tokenizers.__version__}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _trained(corpus: Corpus, vocab_size: int, cache_dir: Path) -> ResolvedTokenizer:
    path = cache_dir / "tokenizers" / _cache_key(corpus, vocab_size) / "tokenizer.json"
    if path.is_file():
        try:
            return _loaded(path, "train", vocab_size)
        except ConfigError as e:  # only disk damage gets here: cache files are written atomically
            warnings.warn(f"retraining: cached tokenizer {path} is unreadable ({e})", stacklevel=2)
    data = train_bpe(corpus.documents, vocab_size).to_str().encode("utf-8")
    atomic_write(path, data)
    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    return ResolvedTokenizer(tokenizer=tokenizer, path=path, sha256=hashlib.sha256(data).hexdigest(),
                             end_of_text_id=ENDOFTEXT_ID, id_bound=_id_bound(tokenizer), trained=True)


def _loaded(path: Path, spec: str, vocab_size: int) -> ResolvedTokenizer:
    try:
        data = path.read_bytes()
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # OSError, UnicodeDecodeError, or the bare Exception tokenizers raises
        raise ConfigError("data.tokenizer", spec,
                          f"a tokenizer.json that Hugging Face tokenizers can load; {path}: {e}") from None
    id_bound = _id_bound(tokenizer)
    if id_bound > vocab_size:
        raise ConfigError("model.vocab_size", vocab_size,
                          f"at least {id_bound}, one more than the largest token id of the tokenizer in {path}")
    return ResolvedTokenizer(tokenizer=tokenizer, path=path, sha256=hashlib.sha256(data).hexdigest(),
                             end_of_text_id=end_of_text_id(tokenizer, path), id_bound=id_bound,
                             trained=False)


def _id_bound(tokenizer: Tokenizer) -> int:
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def end_of_text_id(tokenizer: Tokenizer, path: Path) -> int:
    """Id of the document separator: the first of ``END_OF_TEXT_NAMES`` the tokenizer knows."""
    for name in END_OF_TEXT_NAMES:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return token_id
    raise ConfigError("data.tokenizer", str(path),
                      f"a tokenizer with an end-of-text token, one of {', '.join(END_OF_TEXT_NAMES)}")
