"""The noise-corrected inner second moment (tenacia/train/second_moment.py): the estimate, and the optimizer around it."""

import pytest
import torch
from torch import nn

from tenacia.train.second_moment import (
    NoiseCorrectedAdamW,
    ddp_second_moment,
    noise_corrected_update,
)


def test_estimate_on_a_hand_computed_case():
    """g_a = (1, 2), g_b = (3, 0), halves of 4, ddp's 32: u = g_a g_b + d^2 / (32 (1/4 + 1/4)) = (3, 0) + (4, 4) / 16."""
    u = ddp_second_moment(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]), 4, 4, 32)
    assert u.tolist() == [3.25, 0.25]
    # the same as g^2 - (N - 1) / (4 N) d^2 with g = (2, 1), N = 4: (4, 1) - 3/16 (4, 4)
    assert u.tolist() == [4 - 0.75, 1 - 0.75]


def test_estimate_is_ddps_second_moment_on_average():
    """Per-sample gradients mu + noise (s): a member's halves of 4 of 8 samples estimate mu^2 + s^2 / 32
    (ddp's 4 members of 8) without bias; its own g^2 is mu^2 + s^2 / 8. Unequal halves (3 and 5) too."""
    gen = torch.Generator().manual_seed(0)
    mu, s, trials = torch.tensor([0.0, 0.3, 1.0]), torch.tensor([1.0, 2.0, 0.5]), 400_000
    x = mu + s * torch.randn(trials, 8, 3, generator=gen, dtype=torch.float64)  # (trials, samples, coords)
    want = mu.double() ** 2 + s.double() ** 2 / 32
    for n_a in (4, 3):
        u = ddp_second_moment(x[:, :n_a].mean(1), x[:, n_a:].mean(1), n_a, 8 - n_a, 32).mean(0)
        assert torch.allclose(u, want, rtol=0.02, atol=2e-3), (n_a, u, want)
    own = x.mean(1).pow(2).mean(0)
    assert not torch.allclose(own, want, rtol=0.2)  # what the member's own AdamW would divide by


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def _grads_in_halves(model: nn.Module, opt: NoiseCorrectedAdamW | None, x: torch.Tensor, y: torch.Tensor) -> None:
    n, half = len(x), len(x) // 2
    for k, part in enumerate((slice(0, half), slice(half, n))):
        ((model(x[part]) - y[part]).pow(2).sum(1).sum() / n).backward()
        if k == 0 and opt is not None:
            opt.mark_half(half, n)


def test_with_a_reference_of_its_own_batch_it_is_adamw():
    """With ``reference = n`` (a single member) the estimate is g^2 exactly (g_a g_b + d^2 / 4), so the
    optimizer takes torch's AdamW's steps, clipping included."""
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(1)), torch.zeros(8, 2)
    ours, ref = _model(), _model()
    opt = NoiseCorrectedAdamW(ours.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, reference=8)
    adamw = torch.optim.AdamW(ref.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        _grads_in_halves(ours, opt, x, y)
        noise_corrected_update(ours, opt, 1e-2, grad_clip=0.05)
        _grads_in_halves(ref, None, x, y)
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.05)
        adamw.step()
        adamw.zero_grad()
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert set(opt.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "exp_avg_sq_own"}


def test_negative_estimates_are_floored_at_the_own_moment_share():
    """Halves of opposite sign give u < 0; the denominator uses (n / B) x the own EMA instead."""
    p = nn.Parameter(torch.zeros(1))
    opt = NoiseCorrectedAdamW([p], lr=1.0, betas=(0.0, 0.0), eps=0.0, weight_decay=0.0, reference=32)
    p.grad = torch.tensor([1.0]) * 4 / 8  # g_a = 1 over 4 samples
    opt.mark_half(4, 8)
    p.grad = p.grad + torch.tensor([-3.0]) * 4 / 8  # g_b = -3: g = -1, u = -3 + 16 / 16 = -2
    opt.step()
    assert float(opt.state[p]["exp_avg_sq"]) == pytest.approx(-2.0)
    # denominator sqrt(8 / 32 x g^2) = 0.5: the step is -lr x g / 0.5 = +2
    assert float(p.detach()) == pytest.approx(2.0)
