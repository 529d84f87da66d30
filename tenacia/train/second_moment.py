"""An inner AdamW whose second moment estimates the one ddp's AdamW would see, from a member's own samples.

Why (issue 15; docs/benchmarks.md, "Probes of 2026-12-04 08:44-09:05"): a low-communication member
normalises by the second moment of its own gradients over ``n`` samples, whose noise variance is
``B / n`` times that of ddp's mean over the global batch of ``B`` samples; where noise is not small
next to the signal, every such coordinate moves by less than under ddp, a per-coordinate shrink no
learning rate undoes. Averaging members every step (H = 1) was +8.7% over ddp for that reason alone.
Measured (docs/benchmarks.md, "Run of 2026-12-04 13:24-13:41"): this estimate closes 60-79% of that
gap at H = 1, moves diloco at H = 100 by under 1%, worsens the eager outer step, and costs about a
fifth of the tokens/s on CPU (two passes of half the samples): ``replicas.outer.inner_second_moment``
is ``"own"`` by default.

The estimate, per coordinate, with no communication. The member's inner batch of ``n`` samples is
taken as two halves ``a`` and ``b`` (``n_a + n_b = n``, two backward passes), whose mean gradients are
``g_a`` and ``g_b``; ``g = (n_a g_a + n_b g_b) / n`` is the usual gradient. With per-sample gradients of
mean ``mu`` and variance ``s^2``, independent::

    E[g_a g_b]      = mu^2                              (independent halves)
    E[(g_a - g_b)^2] = s^2 (1 / n_a + 1 / n_b)
    ddp's E[G^2]     = mu^2 + s^2 / B                   (G: the mean over B samples)

so ``u = g_a g_b + (g_a - g_b)^2 / (B (1 / n_a + 1 / n_b))`` is an unbiased estimate of ddp's second
moment; with ``n_a = n_b = n / 2`` and ``B = N n`` (N members of ``n``) it is
``g_a g_b + (g_a - g_b)^2 / (4 N) = g^2 - (N - 1) / (4 N) (g_a - g_b)^2``. ``u`` is fed to AdamW's
second-moment EMA in place of ``g^2`` (``exp_avg_sq``). One ``u`` can be negative and so can the EMA;
the denominator uses ``max(exp_avg_sq, (n / B) exp_avg_sq_own)``, where ``exp_avg_sq_own`` is the
usual EMA of ``g^2``: ddp's ``mu^2 + s^2 / B`` is never below ``n / B`` times the member's own
``mu^2 + s^2 / n`` (``n <= B``), so the floor only cuts estimates that are impossible in expectation.

``corrected_beta2`` (None: AdamW's ``beta2``) gives the corrected EMA a decay of its own: one ``u`` is
far noisier than ``g^2`` (for a coordinate of pure noise its spread is about 7 times its mean at
N = 4), so AdamW's 0.95 leaves the corrected EMA's spread about that of its mean.

Clipping scales ``g`` and ``g_a - g_b`` by the same factor (``noise_corrected_update``, the same formula
as ``torch.nn.utils.clip_grad_norm_``). Everything else is ``torch.optim.AdamW``'s arithmetic
(decoupled weight decay, bias corrections, ``eps`` outside the root). The halves are transient: the
state a checkpoint saves is ``step``, ``exp_avg``, ``exp_avg_sq`` and ``exp_avg_sq_own`` per parameter.
"""

from __future__ import annotations

import torch
from torch import nn


def ddp_second_moment(g_a: torch.Tensor, g_b: torch.Tensor, n_a: int, n_b: int, reference: int) -> torch.Tensor:
    """The unbiased estimate ``u`` of the second moment of the mean gradient over ``reference``
    samples, from two independent halves' mean gradients over ``n_a`` and ``n_b`` samples (module
    docstring)."""
    d = g_a - g_b
    return g_a * g_b + d * d / (reference * (1.0 / n_a + 1.0 / n_b))


class NoiseCorrectedAdamW(torch.optim.Optimizer):
    """AdamW fed ``ddp_second_moment`` for ``reference`` samples (module docstring).

    Per step: ``compute_gradients`` over the first half, ``mark_half(n_a, n)``, ``compute_gradients``
    over the second (both with the loss denominator ``n``), then ``noise_corrected_update``. A step
    with no marked half (a one-sample batch) falls back to ``g^2`` for that step."""

    def __init__(self, params, *, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                 reference: int, corrected_beta2: float | None = None) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.reference = reference
        self.corrected_beta2 = corrected_beta2  # the corrected EMA's decay (None: betas[1], AdamW's)
        self._half: dict[nn.Parameter, torch.Tensor] = {}  # p -> the first half's share of p.grad
        self._split = (0, 0)  # (n_a, n) of the marked step
        self._scale = 1.0  # the clipping factor of the marked step's gradients

    def mark_half(self, n_a: int, n: int) -> None:
        """The gradients hold the first ``n_a`` of ``n`` samples' share (weights ``1 / n``)."""
        self._half = {p: p.grad.detach().clone() for g in self.param_groups for p in g["params"] if p.grad is not None}
        self._split, self._scale = (n_a, n), 1.0

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch's signature)
        n_a, n = self._split
        halves = bool(self._half) and 0 < n_a < n
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    for k in ("exp_avg", "exp_avg_sq", "exp_avg_sq_own"):
                        st[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                t = float(st["step"])
                if halves:  # p.grad = c (h + rest): h = (n_a / n) g_a, rest = (n_b / n) g_b, c the clip
                    h = self._half[p] * self._scale
                    g_a, g_b = h * (n / n_a), (g - h) * (n / (n - n_a))
                    u = ddp_second_moment(g_a, g_b, n_a, n - n_a, self.reference)
                else:
                    u = g * g
                p.mul_(1 - lr * wd)
                st["exp_avg"].lerp_(g, 1 - b1)
                bc = self.corrected_beta2 if self.corrected_beta2 is not None else b2
                st["exp_avg_sq"].mul_(bc).add_(u, alpha=1 - bc)
                st["exp_avg_sq_own"].mul_(b2).addcmul_(g, g, value=1 - b2)
                share = min(n, self.reference) / self.reference if halves else 1.0
                floor = st["exp_avg_sq_own"] * (share / (1 - b2 ** t))
                v = torch.maximum(st["exp_avg_sq"] / (1 - bc ** t), floor)
                denom = v.sqrt().add_(eps)
                p.addcdiv_(st["exp_avg"], denom, value=-lr / (1 - b1 ** t))
        self._half, self._split, self._scale = {}, (0, 0), 1.0


def noise_corrected_update(model: nn.Module, optimizer: NoiseCorrectedAdamW, lr: float, grad_clip: float) -> float:
    """``step.apply_update`` for ``NoiseCorrectedAdamW``: clip (the halves by the same factor), step,
    clear the gradients; returns the gradient norm before clipping."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    params = [p for p in model.parameters() if p.grad is not None]
    norm = float(torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])))
    if grad_clip > 0:
        coef = grad_clip / (norm + 1e-6)  # torch.nn.utils.clip_grad_norm_'s factor
        if coef < 1:
            for p in params:
                p.grad.mul_(coef)
            optimizer._scale = coef
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def build_noise_corrected(model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
                          eps: float, reference: int) -> NoiseCorrectedAdamW:
    """``step.build_optimizer``'s groups (weight decay on matrices only) for ``NoiseCorrectedAdamW``."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return NoiseCorrectedAdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, reference=reference)
