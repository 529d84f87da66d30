"""The corpus, tokenized once into a flat memory-mapped token file.

Layout: ``<cache>/tokens/<key>.bin`` holds every document's token ids followed by the tokenizer's
end-of-text id, document after document, as raw little-endian ``uint16`` (when every id is below
65536) or ``uint32``. ``<key>.json`` beside it records the format, dtype, token count and the hashes
it came from. ``key`` hashes the corpus fingerprint, the tokenizer.json's SHA-256 and the format
version: the same text under the same tokenizer is tokenized once per machine.

Crash safety: the ``.bin`` is written under a temporary name, fsynced and renamed; then the
sidecar the same way. The sidecar is the commit mark: a ``.bin`` without a sidecar whose count
and dtype match its size is never loaded, it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..storage import atomic_write, atomic_write_json
from .corpus import Corpus
from .tokenizer import ResolvedTokenizer

FORMAT_VERSION = 1
BATCH_CHARS = 1 << 20  # text per encode_batch call: enough to keep every core busy, little memory


@dataclass(frozen=True, slots=True)
class TokenFile:
    """A committed token file in the cache."""

    path: Path  # the .bin
    dtype: np.dtype
    count: int  # tokens in the file
    key: str  # sha256 of (corpus fingerprint, tokenizer sha256, format): names the file
    built: bool  # True when this call tokenized the corpus (False: cache hit)

    def tokens(self) -> np.memmap:
        """The tokens, read-only and memory-mapped: shape (count,)."""
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count,))


def token_dtype(id_bound: int) -> np.dtype:
    """The narrowest of uint16/uint32 that holds ids in ``[0, id_bound)``."""
    return np.dtype("<u2") if id_bound <= 1 << 16 else np.dtype("<u4")


def token_file(corpus: Corpus, tokenizer: ResolvedTokenizer, cache_dir: Path) -> TokenFile:
    """The token file of ``corpus`` under ``tokenizer``: loaded from the cache when a committed one
    exists, else tokenized now and committed."""
    key = hashlib.sha256(json.dumps(
        {"corpus": corpus.fingerprint, "tokenizer": tokenizer.sha256, "format": FORMAT_VERSION},
        sort_keys=True).encode()).hexdigest()
    path = cache_dir / "tokens" / f"{key}.bin"
    sidecar = path.with_suffix(".json")
    dtype = token_dtype(tokenizer.id_bound)
    count = _committed_count(path, sidecar, dtype)
    if count is not None:
        return TokenFile(path=path, dtype=dtype, count=count, key=key, built=False)

    written = 0

    def write(tmp: Path) -> None:
        nonlocal written
        with open(tmp, "wb") as f:
            for chunk in _encoded(corpus.documents, tokenizer, dtype):
                f.write(chunk.tobytes())
                written += chunk.size

    atomic_write(path, write)
    meta = {"format": FORMAT_VERSION, "dtype": dtype.name, "count": written,
            "corpus_fingerprint": corpus.fingerprint, "corpus_source": corpus.source,
            "corpus_bytes": corpus.num_bytes, "documents": len(corpus.documents),
            "tokenizer_sha256": tokenizer.sha256, "end_of_text_id": tokenizer.end_of_text_id}
    atomic_write_json(sidecar, meta, indent=1)
    return TokenFile(path=path, dtype=dtype, count=written, key=key, built=True)


def _committed_count(path: Path, sidecar: Path, dtype: np.dtype) -> int | None:
    """The token count the sidecar commits to, if it and the .bin agree; else None."""
    try:
        meta = json.loads(sidecar.read_text())
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    count = meta.get("count") if isinstance(meta, dict) else None
    ok = (meta.get("format") == FORMAT_VERSION and meta.get("dtype") == dtype.name
          and isinstance(count, int) and count > 0 and size == count * dtype.itemsize)
    return count if ok else None


def _encoded(documents: Sequence[str], tokenizer: ResolvedTokenizer, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Token ids of ``documents``, each followed by end-of-text, one array per encode_batch call."""
    separator = np.array([tokenizer.end_of_text_id], dtype=dtype)
    start = 0
    while start < len(documents):
        end, size = start, 0
        while end < len(documents) and (end == start or size < BATCH_CHARS):
            size += len(documents[end])
            end += 1
        encodings = tokenizer.tokenizer.encode_batch(list(documents[start:end]), add_special_tokens=False)
        parts = []
        for encoding in encodings:
            parts += [np.asarray(encoding.ids, dtype=dtype), separator]
        yield np.concatenate(parts)
        start = end
