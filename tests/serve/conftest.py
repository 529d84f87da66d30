"""Servers shared by the serving tests: each is a real ``tenacia serve`` process on port 0; and
the tiny random model with its tokenizer for the in-process engine tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .tiny import ServerProcess, make_tiny_hf_dir, tiny_model, train_tokenizer

API_KEY = "sk-tenacia-test"
# Limits of the shared tiny server, asserted by the tests.
MAX_TOKENS_LIMIT = 512
MAX_PROMPT_TOKENS = 300
MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_hf_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_server(tiny_dir) -> Iterator[ServerProcess]:
    """The tiny random model behind an API key, with small limits."""
    with ServerProcess(tiny_dir, "--api-key", API_KEY, "--name", "tiny",
                       "--max-tokens-limit", str(MAX_TOKENS_LIMIT),
                       "--max-prompt-tokens", str(MAX_PROMPT_TOKENS),
                       "--max-body-bytes", str(MAX_BODY_BYTES),
                       "--kv-cache-tokens", "8192") as server:
        yield server


@pytest.fixture(scope="session")
def smollm2_server() -> Iterator[ServerProcess]:
    """SmolLM2-135M-Instruct behind a real server, started once for every module that needs it
    (half a minute to start on 2 idle cores; the first run also converts the GGUF, and a loaded
    machine stretches both, hence the generous limit: a slow start only waits longer).

    ``engine.products=default``: the products run in fixed layouts (the decode kernel for a
    decode, MKL's packed GEMM for a prefill) instead of the ones timed fastest at start. Timing
    under load can pick oneDNN in one run and MKL's packed GEMM in another; each sums in another
    order (~1e-6), enough to flip a near-tie between two tokens: the likely cause of a greedy
    comparison with transformers (test_smollm2.py) that failed once under load and passed
    otherwise. With fixed layouts every run computes the same logits."""
    # no warm-up: a full-size prefill on one thread, a third of the start, for speed only
    with ServerProcess("smollm2", "--kv-cache-tokens", "16384", "-o", "engine.warm_up=false",
                       "-o", "engine.products=default", start_timeout=600) as s:
        yield s


@pytest.fixture(scope="session")
def client(tiny_server):
    from openai import OpenAI

    # max_retries=0: the client would otherwise retry 429s and 5xxs and hide them.
    with OpenAI(base_url=tiny_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny byte-level BPE (trained once per session)."""
    return train_tokenizer()


@pytest.fixture(scope="session")
def model(tokenizer):
    """A ``micro`` Llama with random weights, sized to the tiny tokenizer. Read-only in tests."""
    return tiny_model(tokenizer.get_vocab_size())
