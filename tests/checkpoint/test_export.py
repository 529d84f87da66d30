"""`tenacia export` of a real (briefly trained) run: transformers loads it with the same logits
and the same chat encoding; `tenacia serve` serves the run directory itself."""

from __future__ import annotations

import json

import pytest
import torch

from tenacia.cli import main as tenacia_main
from tests.serve.tiny import ServerProcess


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tenacia import config
    from tenacia.train.config import RunConfig
    from tenacia.train.trainer import Trainer

    root = tmp_path_factory.mktemp("run")
    overrides = ["model.preset=micro", "train.steps=3", "data.max_bytes=100000", "data.seq_len=64",
                 "train.batch_size=4", "train.micro_batch_size=4", "train.eval_every=0", "train.progress=false",
                 "device.threads=1", "checkpoint.background=false", f'train.run_dir="{root / "run"}"',
                 f'data.cache_dir="{root / "cache"}"']
    Trainer(config.load(RunConfig, None, overrides)).fit()
    return root / "run"


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "hf"
    assert tenacia_main(["export", str(run_dir), "--out", str(out)]) == 0
    return out


def test_export_has_the_files_vllm_and_transformers_read(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja"} <= names
    generation = json.loads((exported / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2, 0]  # <|im_end|> ends a turn, <|endoftext|> a document
    assert not any(p.name.startswith(".") for p in exported.parent.iterdir())  # no temporary left


def test_transformers_logits_match_tenacia_within_1e4(exported, run_dir):
    from transformers import AutoModelForCausalLM

    from tenacia.checkpoint.inference import load_run_for_inference

    torch.set_num_threads(1)
    ours, cfg, _ = load_run_for_inference(run_dir, "cpu", torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diff = (hf(ids).logits - ours(ids)).abs().max().item()
    assert diff < 1e-4


def test_transformers_tokenizer_renders_the_same_chat(exported):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from tenacia.serve.chat import ChatTemplate
    from tenacia.serve.models import chatml_template

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "def add(a, b):"}]
    hf = AutoTokenizer.from_pretrained(exported)
    ours = Tokenizer.from_file(str(exported / "tokenizer.json"))
    want = hf.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    got = ours.encode(ChatTemplate(chatml_template()).render(chat), add_special_tokens=False).ids
    assert got == want
    assert hf.eos_token == "<|im_end|>" and hf.decode(want[:1]) == "<|im_start|>"


def test_export_refuses_to_overwrite_another_directory(run_dir, tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert tenacia_main(["export", str(run_dir), "--out", str(tmp_path)]) == 2
    assert "not an earlier export" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_serve_a_run_directory(run_dir):
    import httpx

    with ServerProcess(run_dir) as server:
        r = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "ignore_eos": True})
        assert r.status_code == 200
        assert r.json()["usage"]["completion_tokens"] == 5
        assert "tenacia run" in server.output()
