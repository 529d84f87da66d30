"""The train step: schedule, gradient accumulation, global-batch normalisation, the device module."""

import math
import subprocess
import sys

import pytest
import torch

from tenacia.device import detect
from tenacia.model.llama import Llama
from tenacia.shape import ModelConfig
from tenacia.train.step import build_optimizer, compute_gradients, lr_at, train_step


def test_warmup_then_cosine_to_floor():
    kw = dict(lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert lr_at(1, **kw) == pytest.approx(0.1) and lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == pytest.approx(0.1)
    values = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def grads(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def test_accumulation_and_shares_give_the_global_batch_mean():
    """Micro-batches, and members holding unequal shares of a batch, sum to the full-batch gradient."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    dev = detect("cpu")
    model = Llama(ModelConfig(preset="micro"))
    batch = torch.randint(0, 512, (6, 17))
    compute_gradients(model, batch, 6, 6, dev)
    full = grads(model).clone()
    model.zero_grad()
    compute_gradients(model, batch, 2, 6, dev)
    assert torch.allclose(grads(model), full, atol=1e-6)
    model.zero_grad()
    compute_gradients(model, batch[:4], 4, 6, dev)  # member A holds 4 of 6 samples
    a = grads(model).clone()
    model.zero_grad()
    compute_gradients(model, batch[4:], 4, 6, dev)  # member B holds 2
    assert torch.allclose(a + grads(model), full, atol=1e-6)


def test_a_step_updates_the_weights_and_reports_what_it_ran():
    torch.manual_seed(0)
    dev = detect("cpu")
    model = Llama(ModelConfig(preset="micro"))
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, device=dev)
    before = [p.detach().clone() for p in model.parameters()]
    batch = torch.randint(0, 512, (4, 17))
    r = train_step(model, opt, batch, step=1, lr=1e-2, grad_clip=1.0, micro_batch_size=4, device=dev)
    assert r.samples == 4 and r.tokens == 64 and r.grad_norm > 0
    assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_device_on_cpu_is_gloo_in_float32():
    dev = detect("cpu")
    assert (dev.type, dev.backend, dev.autocast_dtype, dev.serve_dtype) == ("cpu", "gloo", None, torch.float32)
    r = subprocess.run([sys.executable, "-m", "tenacia", "info"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "gloo" in r.stdout and "float32" in r.stdout
    assert "CPU decode kernels" in r.stdout  # "available" or "off: <why>"
