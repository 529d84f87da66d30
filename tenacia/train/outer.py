"""The replicated state of the low-communication sync strategies: global parameters and the outer optimizer.

Under ``replicas.sync = "diloco" | "streaming"`` (``docs/sync.md``) each replica trains its own
copy of the parameters for a round of inner AdamW steps; what every replica holds alike is this
state: the *global* parameters (what the last outer steps made) and the outer optimizer's
Nesterov momentum. It is what a checkpoint's ``outer.safetensors`` holds, what a newcomer heals
from its donor with the rest, and what the numeric fingerprint compares after each commit
(``fingerprint_tensors``); the inner AdamW moments are each replica's own.

``fragments`` partition the parameters, in model order, into F contiguous groups of about equal
element counts (streaming syncs one per round; diloco has one, the whole model).

The outer step, on fragment ``f`` with the averaged pseudo-gradient ``d`` (global minus local):
``torch.optim.SGD`` with Nesterov momentum and no dampening, i.e. ``b = mu b + d``,
``g -= lr (d + mu b)`` on that fragment's global parameters only (the others' momentum is left
as it was).

``trained_tokens`` is this replica's own, not replicated: the tokens it trained in its last
committed round, the weight of the fragment it sends at the start of the next round under
streaming's overlap (``replicas/diloco.py``). A checkpoint carries it (``own_tensors``); a heal
does not (a newcomer trained nothing of what it holds: its weight is 0).

``residual`` is this replica's own too: per fragment, the error-feedback residual of a compressed
exchange (what it has not sent yet, ``replicas/compress.py``), kept when a round commits. A
checkpoint carries it (``own.residual.<fragment>``), so a resumed run sends the bits the
uninterrupted one would; a heal does not (what a replica had not sent is progress from global
parameters it no longer holds).

``round_end`` is this replica's own as well, under the delayed outer step only
(``replicas.outer.delay``): its parameters at the end of its last committed round, where the next
round's first ``delay`` inner batches start before they are rebased on the new global parameters
(``replicas/local_round.py``). A checkpoint carries it (``own.round_end.<param>``), so a resumed
round trains the bits the uninterrupted one did; a heal does not (the newcomer starts its next
round from the global parameters, its donor's un-averaged progress dropped).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import OuterConfig

OWN_TOKENS = "own.trained_tokens"  # the key of ``trained_tokens`` in a checkpoint's outer.safetensors
OWN_RESIDUAL = "own.residual."  # + fragment: the keys of ``residual`` in a checkpoint's outer.safetensors
OWN_ROUND_END = "own.round_end."  # + parameter name: the keys of ``round_end`` in a checkpoint's outer.safetensors


def split_fragments(sizes: list[int], count: int) -> list[list[int]]:
    """Parameter indices (model order) in ``count`` contiguous, non-empty groups of about equal
    element counts: the next group starts once the running total reached the current group's
    share of the whole (or when every tensor left must start a group of its own). ``ValueError``
    when there are fewer parameters than fragments."""
    if count > len(sizes):
        raise ValueError(f"replicas.outer.fragments={count} but the model has only {len(sizes)} parameter tensors")
    total, out, acc = sum(sizes), [[]], 0
    for i, n in enumerate(sizes):
        to_open = count - len(out)
        if out[-1] and to_open and (acc * count >= len(out) * total or len(sizes) - i == to_open):
            out.append([])
        out[-1].append(i)
        acc += n
    return out


class OuterState:
    """Global parameters (copies of the model's, in its order) and their Nesterov SGD (module docstring)."""

    def __init__(self, model: nn.Module, cfg: OuterConfig, fragments: int):
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]
        self.params = [p.detach().clone() for _, p in named]
        self.fragments = split_fragments([p.numel() for p in self.params], fragments)
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
        self.trained_tokens = 0
        self.residual: dict[int, torch.Tensor] = {}  # fragment -> what this replica has not sent yet
        self.round_end: list[torch.Tensor] | None = None  # delay only: own parameters at its last round's end

    def take_model(self, model: nn.Module) -> None:
        """The model's parameters become the global ones, with no momentum (a fresh start, or a
        checkpoint written without an outer state)."""
        with torch.no_grad():
            for g, p in zip(self.params, model.parameters(), strict=True):
                g.copy_(p)
        self.optimizer.state.clear()

    def step(self, fragment: int, average: list[torch.Tensor]) -> None:
        """The outer step on ``fragment``'s global parameters with the averaged pseudo-gradients
        (one per parameter of the fragment, in order)."""
        for i, d in zip(self.fragments[fragment], average, strict=True):
            self.params[i].grad = d.view_as(self.params[i])
        self.optimizer.step()
        for g in self.params:
            g.grad = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """By name: ``<param>.global`` and ``<param>.momentum_buffer`` (once it exists)."""
        out = {f"{n}.global": g for n, g in zip(self.names, self.params, strict=True)}
        for n, g in zip(self.names, self.params, strict=True):
            buf = self.optimizer.state.get(g, {}).get("momentum_buffer")
            if buf is not None:
                out[f"{n}.momentum_buffer"] = buf
        return out

    def own_tensors(self) -> dict[str, torch.Tensor]:
        """What a checkpoint adds to ``tensors()``: this replica's ``trained_tokens``, residuals and
        ``round_end`` (when held)."""
        ends = zip(self.names, self.round_end or [], strict=False)
        return {OWN_TOKENS: torch.tensor([self.trained_tokens], dtype=torch.int64),
                **{f"{OWN_RESIDUAL}{f}": r for f, r in sorted(self.residual.items())},
                **{f"{OWN_ROUND_END}{n}": p for n, p in ends}}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take ``tensors`` (``tensors()``'s form, with ``own_tensors()`` from a checkpoint) as this
        state, bit for bit (without ``own_tensors()``, as a heal: no trained tokens, no residuals, no
        ``round_end``); ``ValueError`` when a global parameter is missing or of another shape, a
        residual names no fragment or is not of its fragment's size, or ``round_end`` is partial."""
        self.optimizer.state.clear()
        ends = [tensors.get(f"{OWN_ROUND_END}{n}") for n in self.names]
        if any(e is not None for e in ends) and any(e is None or e.shape != g.shape for e, g in zip(ends, self.params,
                                                                                                     strict=True)):
            raise ValueError(f"outer state: '{OWN_ROUND_END}*' does not hold every parameter in its shape")
        self.round_end = [e.to(g.device, dtype=g.dtype).clone() for e, g in zip(ends, self.params, strict=True)] \
            if ends and ends[0] is not None else None
        own = tensors.get(OWN_TOKENS)
        self.trained_tokens = int(own[0]) if own is not None else 0
        self.residual = {}
        for key, r in tensors.items():
            if key.startswith(OWN_RESIDUAL):
                f = key.removeprefix(OWN_RESIDUAL)
                if not f.isdigit() or int(f) >= len(self.fragments) or r.numel() != self.fragment_size(int(f)):
                    raise ValueError(f"outer state: '{key}' names no fragment of {len(self.fragments)} "
                                     "or is not of its size")
                self.residual[int(f)] = r.to(self.params[0].device, dtype=torch.float32).clone().reshape(-1)
        with torch.no_grad():
            for n, g in zip(self.names, self.params, strict=True):
                src = tensors.get(f"{n}.global")
                if src is None or src.shape != g.shape:
                    raise ValueError(f"outer state: '{n}.global' is missing or of another shape")
                g.copy_(src)
                buf = tensors.get(f"{n}.momentum_buffer")
                if buf is not None:
                    self.optimizer.state[g] = {"momentum_buffer": buf.to(g.device).clone()}

    def fragment_size(self, fragment: int) -> int:
        """The number of elements in ``fragment``'s parameters."""
        return sum(self.params[i].numel() for i in self.fragments[fragment])

    def fingerprint_tensors(self) -> list[torch.Tensor]:
        """What must be bit-identical across replicas after a commit: global parameters, then momenta."""
        return [*self.params, *(self.optimizer.state[g]["momentum_buffer"] for g in self.params
                                if "momentum_buffer" in self.optimizer.state.get(g, {}))]
