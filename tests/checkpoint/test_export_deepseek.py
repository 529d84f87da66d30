"""`tenacia export` of a (briefly trained) deepseek-v3 run: a deepseek_v3 directory that
transformers loads with the same logits, and that loads back into tenacia."""

from __future__ import annotations

import json

import torch

from tenacia.cli import main as tenacia_main
from tests.model.deepseek_tiny import routing_margin
from tests.train.moe_run import run_config


def test_export_of_a_moe_run_loads_in_transformers_with_equal_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    from tenacia.checkpoint.inference import load_run_for_inference
    from tenacia.model.hf import load_hf_dir
    from tenacia.train.trainer import Trainer

    torch.set_num_threads(1)
    Trainer(run_config(tmp_path, 3)).fit()
    out = tmp_path / "hf"
    assert tenacia_main(["export", str(tmp_path / "run"), "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "deepseek_v3" and config["num_nextn_predict_layers"] == 1
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= {p.name for p in out.iterdir()}

    ours, cfg, _ = load_run_for_inference(tmp_path / "run", "cpu", torch.float32)
    ids = torch.randint(0, cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    assert routing_margin(ours, ids) > 1e-5
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    back = load_hf_dir(out)
    with torch.inference_mode():
        assert (hf(ids).logits - ours(ids)).abs().max().item() < 1e-5
        assert torch.equal(back(ids), ours(ids))
    assert torch.equal(back.expert_biases(), ours.expert_biases()) and ours.expert_biases().abs().sum() > 0
