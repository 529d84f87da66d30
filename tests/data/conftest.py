"""Fixtures of the data pipeline tests: small corpora made on the spot, and one small stdlib
corpus with a tokenizer trained on it, shared by the session (training takes a fraction of a second)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tenacia.data.corpus import Corpus, read_corpus
from tenacia.data.tokenizer import ResolvedTokenizer, resolve_tokenizer

STDLIB_BYTES = 200_000
SMALL_VOCAB = 512


def write_corpus_dir(root: Path) -> Path:
    """A directory corpus: two .txt files and a .jsonl file, plus a file that must be ignored."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "b.txt").write_text("def add(a, b):\n    return a + b\n" * 40)
    (root / "a.txt").write_text("Größe café naïve — ünïcödé 🐍 text\n" * 30)
    sub = root / "sub"
    sub.mkdir()
    lines = [json.dumps({"text": f"record {i}: the quick brown fox jumps over the lazy dog {i * 7}",
                         "meta": i}) for i in range(30)]
    (sub / "c.jsonl").write_text("\n".join(lines[:15]) + "\n\n" + "\n".join(lines[15:]) + "\n")
    (root / "notes.md").write_text("not part of the corpus")
    return root


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    return write_corpus_dir(tmp_path / "corpus")


@pytest.fixture(scope="session")
def stdlib_corpus() -> Corpus:
    return read_corpus("stdlib", max_bytes=STDLIB_BYTES)


@pytest.fixture(scope="session")
def stdlib_tokenizer(stdlib_corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> ResolvedTokenizer:
    return resolve_tokenizer("train", stdlib_corpus, SMALL_VOCAB, tmp_path_factory.mktemp("cache"))
