"""The memory-mapped token file: contents, dtype, the cache, and crash safety of its writes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tenacia.data import tokens as tokens_module
from tenacia.data.corpus import Corpus
from tenacia.data.tokenizer import ResolvedTokenizer
from tenacia.data.tokens import token_dtype, token_file


def direct_encoding(corpus: Corpus, tok: ResolvedTokenizer) -> list[int]:
    ids: list[int] = []
    for document in corpus.documents:
        ids += tok.tokenizer.encode(document, add_special_tokens=False).ids + [tok.end_of_text_id]
    return ids


def test_contents_equal_direct_encoding(stdlib_corpus: Corpus, stdlib_tokenizer: ResolvedTokenizer,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "BATCH_CHARS", 50_000)  # several encode_batch calls
    built = token_file(stdlib_corpus, stdlib_tokenizer, tmp_path)
    assert built.built and built.dtype == np.uint16
    tokens = built.tokens()
    assert isinstance(tokens, np.memmap)
    assert tokens.tolist() == direct_encoding(stdlib_corpus, stdlib_tokenizer)
    assert int((tokens == 0).sum()) == len(stdlib_corpus.documents)  # one separator per document
    meta = json.loads(built.path.with_suffix(".json").read_text())
    assert meta["dtype"] == "uint16" and meta["count"] == built.count == tokens.size
    assert meta["corpus_fingerprint"] == stdlib_corpus.fingerprint
    assert meta["tokenizer_sha256"] == stdlib_tokenizer.sha256
    assert built.path.stat().st_size == 2 * built.count


def test_wide_vocabularies_use_uint32(stdlib_corpus: Corpus, stdlib_tokenizer: ResolvedTokenizer,
                                      tmp_path: Path) -> None:
    assert token_dtype(1 << 16) == np.uint16 and token_dtype((1 << 16) + 1) == np.uint32
    wide = dataclasses.replace(stdlib_tokenizer, id_bound=70_000, sha256="wide")
    built = token_file(stdlib_corpus, wide, tmp_path)
    assert built.dtype == np.uint32 and built.path.stat().st_size == 4 * built.count
    assert built.tokens().tolist() == direct_encoding(stdlib_corpus, stdlib_tokenizer)


def test_second_call_is_a_cache_hit(stdlib_corpus: Corpus, stdlib_tokenizer: ResolvedTokenizer,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = token_file(stdlib_corpus, stdlib_tokenizer, tmp_path)
    stamp = first.path.stat().st_mtime_ns

    def no_encoding(*args: object) -> None:
        raise AssertionError("the cached token file should have been used")

    monkeypatch.setattr(tokens_module, "_encoded", no_encoding)
    second = token_file(stdlib_corpus, stdlib_tokenizer, tmp_path)
    assert not second.built and (second.path, second.count, second.key) == (first.path, first.count, first.key)
    assert second.path.stat().st_mtime_ns == stamp
    other = dataclasses.replace(stdlib_tokenizer, sha256="another tokenizer")
    with pytest.raises(AssertionError, match="cached token file"):  # another tokenizer, another key
        token_file(stdlib_corpus, other, tmp_path)


def test_crash_mid_write_leaves_nothing_that_loads(stdlib_corpus: Corpus, stdlib_tokenizer: ResolvedTokenizer,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tokens_module._encoded

    def crash_after_first_chunk(*args: object):
        chunks = real(*args)
        yield next(chunks)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(tokens_module, "BATCH_CHARS", 50_000)
    monkeypatch.setattr(tokens_module, "_encoded", crash_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        token_file(stdlib_corpus, stdlib_tokenizer, tmp_path)
    assert list((tmp_path / "tokens").iterdir()) == []  # no half file under any name
    monkeypatch.setattr(tokens_module, "_encoded", real)
    rebuilt = token_file(stdlib_corpus, stdlib_tokenizer, tmp_path)
    assert rebuilt.built
    assert rebuilt.tokens().tolist() == direct_encoding(stdlib_corpus, stdlib_tokenizer)


@pytest.mark.parametrize("damage", ["no sidecar", "short bin", "bad sidecar"])
def test_uncommitted_or_damaged_files_are_rebuilt(damage: str, stdlib_corpus: Corpus,
                                                  stdlib_tokenizer: ResolvedTokenizer, tmp_path: Path) -> None:
    first = token_file(stdlib_corpus, stdlib_tokenizer, tmp_path)
    sidecar = first.path.with_suffix(".json")
    if damage == "no sidecar":  # a crash between the two renames
        sidecar.unlink()
    elif damage == "short bin":
        with open(first.path, "r+b") as f:
            f.truncate(first.count)
    else:
        sidecar.write_text('{"format": 1, "dtype": "uint16", "cou')
    again = token_file(stdlib_corpus, stdlib_tokenizer, tmp_path)
    assert again.built and again.count == first.count
    assert again.tokens().tolist() == direct_encoding(stdlib_corpus, stdlib_tokenizer)


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from tenacia.data import tokens
from tenacia.data.corpus import read_corpus
from tenacia.data.tokenizer import resolve_tokenizer

corpus = read_corpus("stdlib", max_bytes=200_000)
tok = resolve_tokenizer(sys.argv[1], corpus, 512, Path(sys.argv[2]))
real = tokens._encoded

def die_mid_write(*args):
    chunks = real(*args)
    yield next(chunks)
    os.kill(os.getpid(), signal.SIGKILL)

tokens.BATCH_CHARS = 50_000
tokens._encoded = die_mid_write
tokens.token_file(corpus, tok, Path(sys.argv[2]))
"""


def test_kill_9_mid_write_leaves_nothing_that_loads(stdlib_corpus: Corpus, stdlib_tokenizer: ResolvedTokenizer,
                                                    tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(stdlib_tokenizer.path), str(tmp_path)],
                          timeout=60, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    left = sorted(p.name for p in (tmp_path / "tokens").iterdir())
    assert len(left) == 1 and left[0].startswith(".tmp-") and ".bin-" in left[0]  # only the stray temporary file
    rebuilt = token_file(stdlib_corpus, stdlib_tokenizer, tmp_path)
    assert rebuilt.built
    assert rebuilt.tokens().tolist() == direct_encoding(stdlib_corpus, stdlib_tokenizer)
