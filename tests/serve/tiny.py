"""A tiny random-weight model with a real tokenizer, and a real server process around a model.

``make_tiny_hf_dir`` writes a Hugging Face Llama directory (the same format ``tenacia export``
writes) holding a ``micro`` model with random weights and a byte-level BPE trained on a few
standard-library files: fast to load and to run, with ChatML special tokens and template.

``ServerProcess`` runs ``python -m tenacia serve`` in a subprocess on port 0, reads the port it
prints, and always cleans up: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://[^\s]+)")


def train_tokenizer(vocab_size: int = 512):
    import argparse
    import json as json_mod
    import textwrap

    from tenacia.data.tokenizer import train_bpe

    docs = [inspect.getsource(m) for m in (argparse, json_mod.decoder, json_mod.encoder, textwrap)]
    return train_bpe(docs, vocab_size)


def tiny_model(vocab_size: int, seed: int = 0):
    """A random ``micro`` Llama, untied, with weights scaled so that greedy decoding wanders
    through the vocabulary (a tied random model repeats its last token) while sampling at
    temperature 1 stays diverse (entropy about 5.9 of 6.2 nats)."""
    from tenacia.model.llama import Llama
    from tenacia.shape import ModelConfig

    model = Llama(ModelConfig(preset="micro", vocab_size=vocab_size, tie_embeddings=False, max_seq_len=4096))
    model.reset_parameters(seed=seed)
    with torch.no_grad():
        model.tok_embeddings.weight.mul_(50.0)
        model.output.weight.mul_(5.0)
    return model.eval()


def make_tiny_hf_dir(out: Path, seed: int = 0) -> Path:
    """Write ``tiny_model`` and its tokenizer as a Hugging Face directory with a ChatML template."""
    from tenacia.data.tokenizer import CHAT_TEMPLATE, ENDOFTEXT, IM_END, IM_END_ID, IM_START, PAD
    from tenacia.model.hf import save_hf_dir

    tok = train_tokenizer()
    model = tiny_model(tok.get_vocab_size(), seed)
    save_hf_dir(model, out, bos_token_id=None, eos_token_id=IM_END_ID, pad_token_id=None)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE,
        "bos_token": IM_START, "eos_token": IM_END, "pad_token": PAD, "unk_token": ENDOFTEXT,
        "model_max_length": model.cfg.max_seq_len}, indent=2))
    return out


class ServerProcess:
    """``tenacia serve MODEL --port 0 ...`` in a subprocess. Use as a context manager."""

    def __init__(self, model: str | Path, *args: str, env: dict[str, str] | None = None,
                 start_timeout: float = 60.0):
        self.cmd = [sys.executable, "-m", "tenacia", "serve", str(model), "--port", "0",
                    "--threads", "1", *args]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.lines: list[str] = []

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=self.env, cwd=REPO, start_new_session=True)
        found = threading.Event()

        def pump() -> None:
            for line in self.proc.stdout:
                self.lines.append(line)
                m = LISTENING.search(line)
                if m and not found.is_set():
                    self.url = m.group(1)
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while not found.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not start: {''.join(self.lines)[-3000:]}")
        while time.monotonic() < deadline:  # the socket is bound; wait until uvicorn serves
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server never became healthy: {''.join(self.lines)[-3000:]}")

    def __exit__(self, *exc) -> None:
        self.stop()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def output(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def one_thread():
    """One torch thread for an in-process engine test (a module imports it and marks itself
    ``usefixtures("one_thread")``): results then do not depend on the machine's core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
