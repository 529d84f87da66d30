"""Where training text enters tenacia: the embedded standard-library corpus or the user's files.

A corpus is an ordered list of documents (strings) plus a SHA-256 fingerprint of exactly the text
that was read, so that everything derived from it (a trained tokenizer, a token file) can be
cached under that fingerprint.

Sources (``DataConfig.corpus``):
- ``"stdlib"``: the ``.py`` files of the running Python's standard library, found through
  ``sysconfig.get_paths()["stdlib"]``, in sorted order of their relative paths, leaving out test
  directories, ``site-packages`` and ``__pycache__``. One file is one document. It is real,
  multi-megabyte text that exists on every machine with no download; its fingerprint differs
  between Python versions, which is what the cache needs.
- a ``.txt`` file: one document.
- a ``.jsonl`` file: one document per non-blank line, the string in field ``jsonl_field``.
- a directory: every ``.txt`` and ``.jsonl`` file below it, in sorted order of relative paths.

``max_bytes`` (> 0) caps the UTF-8 bytes read: documents are taken in order and the one that
crosses the cap is cut at the cap (on a character boundary). User files must be UTF-8; a missing
path, an unknown suffix, invalid UTF-8, bad JSON or a line without the field raises
``CorpusError`` (a ``ConfigError``, so the CLI reports it as a bad input) naming the file, the
line and what is expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError

STDLIB = "stdlib"
# Test suites, installed packages, and generated tables (codec maps, pydoc topics) that would teach
# the model lookup tables rather than Python.
SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                          "encodings", "pydoc_data"})
USER_SUFFIXES = (".txt", ".jsonl")


class CorpusError(ConfigError):
    """The corpus cannot be read: the message names where (file, line) and what was expected."""

    def __init__(self, where: str, expected: str, found: str = ""):
        self.field, self.value, self.allowed = "data.corpus", where, expected
        ValueError.__init__(self, f"corpus {where}: expected {expected}" + (f"; found {found}" if found else ""))


@dataclass(frozen=True, slots=True)
class Corpus:
    """Documents in a fixed order, and the fingerprint of exactly their text."""

    source: str  # "stdlib" or the path given
    documents: tuple[str, ...]
    files: int  # files the documents came from
    num_bytes: int  # UTF-8 bytes of all documents
    fingerprint: str  # sha256 hex over every document, length-framed (document boundaries count)


def read_corpus(source: str, *, jsonl_field: str = "text", max_bytes: int = 0) -> Corpus:
    """Read ``source`` (``"stdlib"`` or a path) into a ``Corpus``; see the module docstring."""
    files = corpus_files(source)
    documents: list[str] = []
    used_files: set[Path] = set()
    digest = hashlib.sha256()
    total = 0
    for path, text in _documents(files, jsonl_field):
        data = text.encode("utf-8")
        full = bool(max_bytes) and total + len(data) >= max_bytes
        if full:
            data = data[: max_bytes - total]
            text = data.decode("utf-8", errors="ignore")  # drop a character cut in half
            data = text.encode("utf-8")
        if data:
            documents.append(text)
            used_files.add(path)
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
            total += len(data)
        if full:
            break
    if not documents:
        raise CorpusError(source, "some text", "only empty documents")
    return Corpus(source=source, documents=tuple(documents), files=len(used_files),
                  num_bytes=total, fingerprint=digest.hexdigest())


def corpus_files(source: str) -> list[Path]:
    """The files ``source`` reads, in corpus order (before the ``max_bytes`` cap)."""
    return _stdlib_files() if source == STDLIB else _user_files(Path(source).expanduser(), source)


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise CorpusError(f"'stdlib' at {root}", "the Python standard library's source files",
                          "no such directory; set data.corpus to your own .txt/.jsonl files")
    return _walk(root, (".py",))


def _user_files(path: Path, source: str) -> list[Path]:
    if path.is_dir():
        files = _walk(path, USER_SUFFIXES)
        if not files:
            raise CorpusError(f"directory {source}", "at least one .txt or .jsonl file below it", "none")
        return files
    if not path.is_file():
        raise CorpusError(f"path {source}", "'stdlib' or an existing .txt/.jsonl file or a directory of them",
                          "nothing at that path")
    if path.suffix not in USER_SUFFIXES:
        raise CorpusError(f"file {source}", "a .txt or .jsonl file (or a directory of them)",
                          f"suffix {path.suffix!r}")
    return [path]


def _walk(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under ``root`` with one of ``suffixes``, sorted by relative path, skipping
    ``SKIPPED_DIRS``. Symlinked directories are not followed (no cycles, no escaping ``root``)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        found += [Path(dirpath, f) for f in filenames if f.endswith(suffixes)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _documents(files: list[Path], jsonl_field: str) -> Iterator[tuple[Path, str]]:
    """(file, document text) in corpus order. Standard-library files that are not valid UTF-8
    are read with U+FFFD replacements; user files must be valid UTF-8."""
    for path in files:
        if path.suffix == ".jsonl":
            yield from ((path, text) for text in _jsonl_documents(path, jsonl_field))
        elif path.suffix == ".py":
            yield path, path.read_bytes().decode("utf-8", errors="replace")
        else:
            yield path, _decode(path.read_bytes(), path, "")


def _decode(data: bytes, path: Path, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"file {path}{where}", "UTF-8 text",
                          f"byte {e.start} ({data[e.start:e.start + 1]!r}) is not valid UTF-8") from None


def _jsonl_documents(path: Path, field: str) -> Iterator[str]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = _decode(raw, path, f" line {number}").strip()
            if not line:
                continue
            where = f"file {path} line {number}"
            expected = f"a JSON object with a string field {field!r} (data.jsonl_field)"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(where, expected, f"invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise CorpusError(where, expected, f"a JSON {type(record).__name__}")
            if field not in record:
                raise CorpusError(where, expected, f"no field {field!r}; its fields are {sorted(record)[:10]}")
            if not isinstance(record[field], str):
                raise CorpusError(where, expected, f"{field!r} holds a {type(record[field]).__name__}")
            yield record[field]
