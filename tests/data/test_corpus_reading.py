"""Reading corpora: the embedded stdlib corpus, the user's files, the fingerprint, bad inputs."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from tenacia.config import ConfigError, from_dict
from tenacia.data.config import DataConfig
from tenacia.data.corpus import SKIPPED_DIRS, Corpus, CorpusError, corpus_files, read_corpus


def test_stdlib_corpus_is_sorted_python_source_without_tests(stdlib_corpus: Corpus) -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = corpus_files("stdlib")
    relative = [f.relative_to(root) for f in files]
    assert len(files) > 300  # the whole standard library, not a sample
    assert all(f.suffix == ".py" for f in files)
    assert not [r for r in relative if SKIPPED_DIRS & set(r.parts[:-1])]
    assert [r.as_posix() for r in relative] == sorted(r.as_posix() for r in relative)
    # The capped corpus is exactly the first files, in order, the last one cut at the cap.
    assert stdlib_corpus.num_bytes == sum(len(d.encode()) for d in stdlib_corpus.documents)
    assert 200_000 - 3 <= stdlib_corpus.num_bytes <= 200_000
    for document, path in zip(stdlib_corpus.documents[:-1], files, strict=False):
        assert document == path.read_text(encoding="utf-8", errors="replace")
    last = files[len(stdlib_corpus.documents) - 1].read_text(encoding="utf-8", errors="replace")
    assert last.startswith(stdlib_corpus.documents[-1])


def test_stdlib_corpus_is_deterministic(stdlib_corpus: Corpus) -> None:
    again = read_corpus("stdlib", max_bytes=200_000)
    assert again.fingerprint == stdlib_corpus.fingerprint
    assert again.documents == stdlib_corpus.documents
    assert read_corpus("stdlib", max_bytes=100_000).fingerprint != stdlib_corpus.fingerprint


def test_directory_corpus_order_and_jsonl_lines(corpus_dir: Path) -> None:
    corpus = read_corpus(str(corpus_dir))
    assert [f.relative_to(corpus_dir).as_posix() for f in corpus_files(str(corpus_dir))] == \
        ["a.txt", "b.txt", "sub/c.jsonl"]  # notes.md is not a corpus suffix
    assert corpus.files == 3
    assert len(corpus.documents) == 2 + 30  # one per .txt file, one per non-blank JSONL line
    assert corpus.documents[0] == (corpus_dir / "a.txt").read_text()
    assert corpus.documents[2] == "record 0: the quick brown fox jumps over the lazy dog 0"
    assert corpus.documents[-1].startswith("record 29:")


def test_jsonl_field_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"body": "hello"}) + "\n" + json.dumps({"body": "world"}) + "\n")
    assert read_corpus(str(path), jsonl_field="body").documents == ("hello", "world")


def test_max_bytes_cuts_on_a_character_boundary(tmp_path: Path) -> None:
    path = tmp_path / "u.txt"
    path.write_text("é" * 10)  # 2 bytes each
    corpus = read_corpus(str(path), max_bytes=7)
    assert corpus.documents == ("é" * 3,)
    assert corpus.num_bytes == 6


def test_fingerprint_covers_text_and_document_boundaries(tmp_path: Path) -> None:
    def fingerprint(*documents: str) -> str:
        path = tmp_path / "f.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
        return read_corpus(str(path)).fingerprint

    assert fingerprint("ab", "c") == fingerprint("ab", "c")
    assert fingerprint("ab", "c") != fingerprint("a", "bc")
    assert fingerprint("ab", "c") != fingerprint("ab", "d")


def test_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError, match=r"nope\.txt.*'stdlib' or an existing \.txt/\.jsonl"):
        read_corpus(str(missing))
    with pytest.raises(ConfigError, match=r"data\.corpus.*nope\.txt"):
        from_dict(DataConfig, {"corpus": str(missing)}, prefix="data")  # as the loader builds the section


def test_bad_jsonl_names_file_line_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n')
    with pytest.raises(CorpusError) as e:
        read_corpus(str(path))
    message = str(e.value)
    assert f"{path} line 3" in message and "invalid JSON" in message and "string field 'text'" in message

    path.write_text('{"text": "fine"}\n{"content": "x", "id": 2}\n')
    with pytest.raises(CorpusError, match=r"line 2: expected a JSON object with a string field 'text'.*no field 'text'.*\['content', 'id'\]"):
        read_corpus(str(path))

    path.write_text('{"text": 5}\n')
    with pytest.raises(CorpusError, match=r"line 1: .*'text' holds a int"):
        read_corpus(str(path))

    path.write_text('["text"]\n')
    with pytest.raises(CorpusError, match=r"line 1: .*found a JSON list"):
        read_corpus(str(path))


def test_other_bad_inputs(tmp_path: Path) -> None:
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1\.txt: expected UTF-8 text; found byte 3"):
        read_corpus(str(binary))
    other = tmp_path / "data.csv"
    other.write_text("a,b")
    with pytest.raises(CorpusError, match=r"a \.txt or \.jsonl file.*'\.csv'"):
        read_corpus(str(other))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(CorpusError, match=r"at least one \.txt or \.jsonl file"):
        read_corpus(str(empty_dir))
    blank = tmp_path / "blank.txt"
    blank.write_text("")
    with pytest.raises(CorpusError, match="only empty documents"):
        read_corpus(str(blank))
