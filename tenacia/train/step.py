"""One training step, split at the point where replicas must agree.

``train_step`` = ``compute_gradients`` -> ``apply_update``, for a single process. Replicas
(``tenacia.train.replicas``) call the two halves themselves and put their quorum's all-reduce and
vote between them: a step the quorum abandons never reaches ``apply_update``, so it can be redone
with the same samples by a new quorum.

Gradients are normalised by the *global* batch (``loss_denominator`` samples), not by the local
share: a member holding k of the batch's B samples contributes sum(per-sample loss)/B, so a
sum all-reduce gives the exact mean over the global batch whatever the shares are. This is how the
global batch keeps its size when a replica is missing: survivors take larger shares.

A mixture-of-experts model (``DeepSeekV3``) also moves its balancing biases after each applied
step, from the tokens each expert received during it (``balance_experts``). ``train_step`` does
it for a single process. Replicas take each share's loads with its gradients
(``take_expert_loads``), sum them over the quorum with the gradients and move every bias by the
sum (``replicas/apply.py``), so that all replicas' biases move alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .. import hooks
from ..device import Device
from ..model import DeepSeekV3


@dataclass(slots=True)
class StepResult:
    loss: float  # mean loss over this member's samples
    samples: int  # samples this member processed
    tokens: int  # target tokens this member processed
    grad_norm: float  # global gradient norm before clipping (nan when unknown)
    expert_loads: list[list[int]] | None = None  # MoE: tokens per expert and layer in this step


def compute_gradients(model: nn.Module, batch: torch.Tensor, micro_batch_size: int,
                      loss_denominator: int, device: Device, step: int = 0) -> tuple[float, int]:
    """Forward and backward over ``batch`` (n, T+1) in micro-batches; grads hold
    sum(per-sample mean loss) / loss_denominator. Returns (mean next-token loss of these samples,
    tokens); the model's other training terms (MTP, balance) are in the gradients only. The logits
    of the output head pass the ``activations`` tamper site of ``tenacia.hooks`` (``step``)."""
    total, n = 0.0, batch.size(0)
    head = getattr(model, "output", None)
    tap = (head.register_forward_hook(lambda _m, _i, logits: hooks.tamper("activations", step, logits))
           if hooks.tampering() and head is not None else None)
    try:
        for start in range(0, n, micro_batch_size):
            micro = batch[start:start + micro_batch_size].to(device.torch, non_blocking=True)
            inputs, targets = micro[:, :-1], micro[:, 1:]  # (b, T)
            with device.autocast():
                loss, parts = model.loss(inputs, targets)  # means over b*T tokens
            weight = micro.size(0) / loss_denominator
            (loss * weight).backward()
            total += parts["lm"].item() * micro.size(0)
    finally:
        if tap is not None:
            tap.remove()
    return total / max(n, 1), n * (batch.size(1) - 1)


def apply_update(model: nn.Module, optimizer: torch.optim.Optimizer, lr: float, grad_clip: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    if grad_clip > 0:
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    else:
        norm = float(torch.linalg.vector_norm(
            torch.stack([p.grad.detach().norm() for p in model.parameters() if p.grad is not None])))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def take_expert_loads(model: nn.Module) -> torch.Tensor | None:
    """The tokens each expert received in the training forwards since the last take (or bias
    update), (MoE layers, experts) int64, and clear the counts; None for a dense model."""
    if not isinstance(model, DeepSeekV3):
        return None
    loads = model.expert_loads().clone()
    for moe in model.moe_layers():
        moe.step_loads.zero_()
    return loads


def balance_experts(model: nn.Module) -> list[list[int]] | None:
    """After an applied step of one process: move a mixture-of-experts model's balancing biases
    by the tokens each expert received during the step; returns those loads (layers x experts),
    None for a dense model."""
    if not isinstance(model, DeepSeekV3):
        return None
    loads = model.expert_loads()
    model.update_bias(loads)
    return loads.tolist()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor, *, step: int,
               lr: float, grad_clip: float, micro_batch_size: int, device: Device,
               loss_denominator: int | None = None) -> StepResult:
    """Run one step on ``batch``, normalised by ``loss_denominator`` samples (default: all of
    ``batch``). The ``mid_step`` point of ``tenacia.hooks`` lies between the two halves."""
    loss, tokens = compute_gradients(model, batch, micro_batch_size, loss_denominator or batch.size(0), device, step)
    hooks.reach("mid_step", step)
    norm = apply_update(model, optimizer, lr, grad_clip)
    loads = balance_experts(model)
    return StepResult(loss=loss, samples=batch.size(0), tokens=tokens, grad_norm=norm, expert_loads=loads)


def lr_at(step: int, *, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine down to ``min_lr_ratio * lr``.
    ``step`` counts from 1."""
    if warmup_steps and step <= warmup_steps:
        return lr * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float, device: Device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only. ``foreach`` kernels; fused on accelerators."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=device.is_accelerator or None)
