"""Checks shared by the Hugging Face format tests: logits parity, and an export that transformers
loads with every key used and that loads back into tenacia bit for bit."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tenacia.model.hf import load_hf_dir
from tenacia.model.llama import Llama


def assert_logits_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Within 1e-4 of the largest logit (float32)."""
    bound = 1e-4 * float(theirs.abs().max())
    diff = float((ours - theirs).abs().max())
    assert diff <= bound, f"max |logit diff| {diff:.3g} > 1e-4 * max|logit| = {bound:.3g}"


def assert_export_round_trips(ours: Llama, out: Path, hf_class: type, vocab: int) -> torch.nn.Module:
    """transformers loads ``out`` as ``hf_class`` with no missing or unexpected keys and the same
    logits as ``ours``; tenacia loads it back with equal tensors and config. Returns theirs."""
    theirs, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert isinstance(theirs, hf_class)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tokens = torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        assert_logits_close(ours(tokens), theirs.eval()(tokens).logits)
    back = load_hf_dir(out)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert dataclasses.replace(back.cfg, preset=ours.cfg.preset) == ours.cfg
    return theirs


def randomize_(model: torch.nn.Module, scale: float = 0.15, bias_scale: float | None = None) -> torch.nn.Module:
    """Every tensor random, norm gains around 1 and q/k/v biases too, so that a wrong or missing
    mapping between any two tensors shows in the logits. Seed torch before calling."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if name.endswith("norm.weight") else 0.0
            std = 0.2 if base else (bias_scale if bias_scale is not None and name.endswith(".bias") else scale)
            p.copy_(base + torch.randn(p.shape) * std)
    return model.eval()
