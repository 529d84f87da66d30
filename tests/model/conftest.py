"""Fixtures for the model tests: pinned torch threads, and SmolLM2-135M-Instruct converted once
per machine (cached under $TENACIA_CACHE or ~/.cache/tenacia) and loaded once per session."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# A fixed thread count, so that results do not depend on the machine's core count. One thread:
# on 2 cores shared with other processes, 2 threads made the tiny models 18x slower and SmolLM2's
# 32-token generation swing between 1 and 10 s (1 to 3.5 s with one thread).
PARITY_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def pinned_threads() -> Iterator[int]:
    """Run every model test with PARITY_THREADS torch threads, restoring the count after."""
    with torch_threads(PARITY_THREADS) as n:
        yield n


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The converted SmolLM2 directory; converting it (about 20 s) happens once per machine."""
    from tenacia.data.smollm2 import smollm2_dir

    with torch_threads(PARITY_THREADS):
        return smollm2_dir()


@pytest.fixture(scope="session")
def smollm2_models(smollm2_path):
    """(transformers LlamaForCausalLM, tenacia Llama, tokenizer), float32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tenacia.model.hf import load_hf_dir

    with torch_threads(PARITY_THREADS):
        hf = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
        return hf, load_hf_dir(smollm2_path), AutoTokenizer.from_pretrained(smollm2_path)
