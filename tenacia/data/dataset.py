"""Training samples: fixed windows over the token file, split into train and eval.

Window ``w`` holds tokens ``[w * seq_len, w * seq_len + seq_len + 1)``: ``seq_len`` inputs and,
shifted by one, ``seq_len`` targets. Windows do not overlap except for that one boundary token,
and a token file of ``count`` tokens has ``(count - 1) // seq_len`` of them; the tail is unused.

The split holds out ``max(1, round(n * eval_fraction))`` windows spread evenly over the corpus
(so eval text is not all from the last files), the same for every seed; the rest are training
windows. Each ``TokenWindows`` numbers its own windows 0..len-1, the ids the sampler draws.

``prepare_data`` is the one entry point: corpus -> tokenizer -> token file -> windows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from ..config import ConfigError
from ..storage import cache_root
from .config import DataConfig
from .corpus import read_corpus
from .tokenizer import resolve_tokenizer
from .tokens import TokenFile, token_file

SPLIT_VERSION = 1  # bump when the window layout or the split changes: it is part of the fingerprint


class TokenWindows:
    """Samples of ``seq_len + 1`` tokens, addressed by ids ``0..len(self)-1``."""

    def __init__(self, tokens: np.ndarray, seq_len: int, windows: np.ndarray):
        """``tokens``: the token file, shape (count,); ``windows``: the global window numbers
        this set holds, in id order."""
        self._tokens = tokens
        self.seq_len = seq_len
        self._windows = np.asarray(windows, dtype=np.int64)
        self._offsets = np.arange(seq_len + 1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._windows)

    @property
    def windows(self) -> np.ndarray:
        """Global window numbers of ids 0..len-1 (a copy): two sets are disjoint iff these are."""
        return self._windows.copy()

    def get(self, ids: Sequence[int]) -> torch.Tensor:
        """The samples with these ids: a LongTensor of shape (len(ids), seq_len + 1)."""
        index = np.asarray(ids, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            bad = index[(index < 0) | (index >= len(self))][0]
            raise IndexError(f"sample id {bad} out of range: this set holds ids 0..{len(self) - 1}")
        starts = self._windows[index] * self.seq_len  # (B,)
        rows = self._tokens[starts[:, None] + self._offsets]  # (B, seq_len + 1), gathered from the memmap
        return torch.from_numpy(rows.astype(np.int64))


def split_windows(count: int, seq_len: int, eval_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) global window numbers for a token file of ``count`` tokens."""
    n = (count - 1) // seq_len
    if n < 2:
        raise ConfigError("data.seq_len", seq_len,
                          f"small enough to cut at least 2 samples (1 train, 1 eval) from the corpus's "
                          f"{count} tokens: at most {(count - 1) // 2}; or use a larger corpus")
    n_eval = max(1, round(n * eval_fraction))
    eval_windows = (np.arange(n_eval, dtype=np.int64) * n + n // 2) // n_eval  # evenly spread, increasing
    train_windows = np.setdiff1d(np.arange(n, dtype=np.int64), eval_windows, assume_unique=True)
    return train_windows, eval_windows


@dataclass(frozen=True, slots=True)
class PreparedData:
    """Everything the trainer needs from the data pipeline."""

    tokenizer: Tokenizer
    tokenizer_path: Path  # tokenizer.json; the trainer copies it into its run directory
    train: TokenWindows
    eval: TokenWindows
    # sha256 of (token file key, seq_len, eval_fraction, split version): equal fingerprints mean
    # equal train and eval samples under equal ids. Checkpoints record it to refuse resuming on
    # other data.
    fingerprint: str
    corpus_fingerprint: str
    tokenizer_sha256: str
    end_of_text_id: int
    tokens: TokenFile


def prepare_data(cfg: DataConfig, vocab_size: int) -> PreparedData:
    """Read the corpus, resolve (train or load) the tokenizer, tokenize once into the cache, cut
    windows and split them. Cached work is reused: a second call with the same corpus and
    tokenizer neither trains nor tokenizes."""
    corpus = read_corpus(cfg.corpus, jsonl_field=cfg.jsonl_field, max_bytes=cfg.max_bytes)
    cache_dir = cache_root(cfg.cache_dir)
    resolved = resolve_tokenizer(cfg.tokenizer, corpus, vocab_size, cache_dir)
    tokens = token_file(corpus, resolved, cache_dir)
    train_windows, eval_windows = split_windows(tokens.count, cfg.seq_len, cfg.eval_fraction)
    array = tokens.tokens()
    identity = {"tokens": tokens.key, "seq_len": cfg.seq_len, "eval_fraction": cfg.eval_fraction,
                "split": SPLIT_VERSION}
    return PreparedData(
        tokenizer=resolved.tokenizer,
        tokenizer_path=resolved.path,
        train=TokenWindows(array, cfg.seq_len, train_windows),
        eval=TokenWindows(array, cfg.seq_len, eval_windows),
        fingerprint=hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest(),
        corpus_fingerprint=corpus.fingerprint,
        tokenizer_sha256=resolved.sha256,
        end_of_text_id=resolved.end_of_text_id,
        tokens=tokens,
    )
