"""The one storage layer: atomic files and directories, JSON Lines that survive torn writes."""

import json
import os

import pytest

from tenacia import storage


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "f.json"
    storage.atomic_write(target, b"old")
    storage.atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new" and os.stat(target).st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError):
        storage.atomic_write(target, lambda p: (p.write_text("half"), (_ for _ in ()).throw(RuntimeError())))
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_first_publish_wins_and_the_loser_is_discarded(tmp_path):
    final = tmp_path / "model"
    with storage.atomic_directory(final, replace=False) as first:
        (first.tmp / "config.json").write_text(json.dumps({"marker": "first"}))
    with storage.atomic_directory(final, replace=False) as second:
        (second.tmp / "config.json").write_text(json.dumps({"marker": "second"}))
    assert first.published and not second.published
    assert json.loads((final / "config.json").read_text()) == {"marker": "first"}
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_directory_build_leaves_the_old_one(tmp_path):
    final = tmp_path / "ckpt"
    with storage.atomic_directory(final) as build:
        (build.tmp / "a").write_text("1")
    with pytest.raises(ValueError), storage.atomic_directory(final) as build:
        (build.tmp / "a").write_text("2")
        raise ValueError("crash mid-write")
    assert (final / "a").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_stale_temporaries_of_other_processes_are_removed(tmp_path):
    (tmp_path / f".tmp-x-{os.getpid()}").mkdir()
    (tmp_path / ".tmp-x-1").mkdir()
    (tmp_path / ".tmp-y.json-1-2").write_text("")
    storage.remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".tmp-x-{os.getpid()}"]


def test_jsonl_skips_a_torn_last_line_and_the_tail_waits_for_it(tmp_path):
    log = tmp_path / "events.jsonl"
    tail = storage.JsonlTail(log)
    storage.append_jsonl(log, {"n": 1})
    with open(log, "a") as f:
        f.write('{"n": 2')  # a writer killed mid-line
    assert storage.read_jsonl(log) == ([{"n": 1}], 1)
    assert tail.new() == [{"n": 1}] and tail.new() == []
    with open(log, "a") as f:
        f.write("}\n")
    assert tail.new() == [{"n": 2}]
    assert storage.read_json(tmp_path / "missing.json") is None
