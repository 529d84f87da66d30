"""What a member does to its own trainer: hold a voted step, apply it on commit, load a healed state.

Contract: a member changes its weights, optimizer, sampler and counters only here, and only on
the leader's word (a ``commit`` verdict, a quorum's ``resolve``) or with a donor's whole state. A
``PendingStep`` is the one value a member holds between its vote and the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ... import checkpoint as ckpt
from ... import hooks
from ...model import DeepSeekV3
from ...model.deepseek.moe import update_bias
from ..config import RunConfig
from ..step import apply_update
from ..trainer import Trainer
from .protocol import Vote
from .shares import LocalGradients


@dataclass(frozen=True, slots=True)
class PendingStep:
    """A step this member voted ok on, held until the verdict: its vote and the all-reduced
    contribution (``contribution``: the gradients in parameter order, then any expert loads). Applied on ``commit`` (or a
    quorum's ``resolve``), dropped otherwise."""

    vote: Vote
    grads: torch.Tensor

    @property
    def step(self) -> int:
        return self.vote.step


def flat_gradients(model: torch.nn.Module) -> torch.Tensor:
    """A flat copy of the gradients for the sum (zeros where a parameter has none): the
    parameters' own ``.grad`` stay this member's share (salvage)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in model.parameters()])


def gradient_numel(model: torch.nn.Module) -> int:
    """How many leading elements of a ``contribution`` are gradients."""
    return sum(p.numel() for p in model.parameters())


def contribution(model: torch.nn.Module, grads: LocalGradients) -> torch.Tensor:
    """This member's tensor for the step's sum: ``flat_gradients``, then, for a mixture-of-experts
    model, the expert loads of its share (``grads.loads``; zeros for a member without a share) as
    float32 counts, exact below 2**24 tokens per expert and step whatever order the sum takes."""
    flat = flat_gradients(model)
    if not isinstance(model, DeepSeekV3):
        return flat
    loads = grads.loads if grads.loads is not None else torch.zeros_like(model.expert_loads())
    return torch.cat([flat, loads.to(device=flat.device, dtype=torch.float32).reshape(-1)])


def reduced_loads(model: torch.nn.Module, reduced: torch.Tensor) -> torch.Tensor | None:
    """The summed expert loads (MoE layers, experts) int64 at the end of a reduced
    ``contribution``; None for a dense model."""
    if not isinstance(model, DeepSeekV3):
        return None
    shape = model.expert_loads().shape
    return reduced[gradient_numel(model):].round().to(torch.int64).view(shape).cpu()


def expert_outcome(model: torch.nn.Module, reduced: torch.Tensor) -> dict[str, Any]:
    """The vote's MoE fields (``protocol.Vote``) from a reduced ``contribution``: the summed loads
    and the biases a commit of them sets (computed aside: the model's own move on apply). Empty
    for a dense model."""
    loads = reduced_loads(model, reduced)
    if loads is None:
        return {}
    biases = []
    for moe, layer_loads in zip(model.moe_layers(), loads, strict=True):
        bias = moe.router.expert_bias.detach().clone()
        update_bias(bias, layer_loads, moe.cfg.bias_update_speed)
        biases.append(tuple(bias.tolist()))
    return {"expert_loads": tuple(tuple(layer) for layer in loads.tolist()), "expert_bias": tuple(biases)}


def apply_step(trainer: Trainer, grads: LocalGradients, pending: PendingStep, cfg: RunConfig) -> None:
    """Apply the reduced gradients held for the voted step, and commit it locally. The
    parameters' ``.grad`` become views of the reduced buffer, not copies: nothing reads that
    buffer after the step is applied, and this member's own share (``grads``) is released here,
    once the step can no longer be salvaged. A mixture-of-experts model then moves its balancing
    biases by the loads summed over the quorum: the same on every member."""
    t, flat = trainer, pending.grads
    offset = 0
    for p in t.model.parameters():
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p)
        offset += n
    lr = hooks.tamper("lr", pending.step, t.lr(pending.step))  # a chaos lr spike changes it here
    apply_update(t.model, t.optimizer, lr, cfg.optim.grad_clip)
    loads = reduced_loads(t.model, flat)
    if loads is not None:
        t.model.update_bias(loads)
    grads.drop()
    # a newcomer that healed this step computed no share: it knows the step's size, not its ids
    t.commit(pending.vote.start, list(pending.vote.batch), cfg.train.batch_size * cfg.data.seq_len,
             samples=cfg.train.batch_size)
    hooks.reach("between_steps", t.step)


OUTER = "outer:"  # prefix of the outer state's tensors among a heal's optimizer tensors (diloco, streaming)


def load_healed(trainer: Trainer, meta: dict[str, Any], model: dict[str, torch.Tensor],
                optim: dict[str, torch.Tensor]) -> None:
    """Take a donor's state (``heal.HealFetch.result``) as this trainer's own: weights, optimizer
    moments and, for diloco and streaming, the outer state (its tensors named ``OUTER`` + name)."""
    trainer.model.load_state_dict(model, strict=False)
    outer = {k.removeprefix(OUTER): v for k, v in optim.items() if k.startswith(OUTER)}
    ckpt.load_optimizer_tensors(trainer.model, trainer.optimizer,
                                {k: v for k, v in optim.items() if not k.startswith(OUTER)})
    if trainer.outer is not None:
        trainer.outer.load(outer)
    trainer.sampler.load_state_dict(meta["sampler"])
    trainer.step, trainer.tokens_seen = int(meta["step"]), int(meta["tokens_seen"])
