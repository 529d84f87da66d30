"""The DeepSeek-V3 decoder: latent attention (``mla.py``), dense first layers then DeepSeekMoE
layers (``moe.py``), and multi-token prediction. It knows nothing of parallelism or serving.

Multi-token prediction of depth D (report, section 2.2): module k (1..D) predicts the token k + 1
places ahead. At position i it takes the previous depth's hidden state h_i (depth 0: the main
model's, after its final norm, as transformers and vLLM feed it) and the embedding of the token
k places ahead, and runs

    h'_i = norm_k(block_k(eh_proj_k([enorm_k(Emb(t_{i+k})); hnorm_k(h_i)])))
    logits'_i = output(h'_i)       (embedding and output head shared with the main model)

over positions k.. of the sequence (the embedded tokens' positions). The training loss is
``lm + mtp_loss_weight * mean_k(mtp_k) + balance`` (``loss``); inference (``forward``) runs the
main model alone.

Contract for training loops: ``loss`` in training mode adds each MoE layer's expert counts to
its ``step_loads``; after the optimizer step, call ``update_bias(loads)`` with ``expert_loads()``
summed over every replica; it moves the balancing biases and clears the counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...shape import ModelConfig
from ..llama import FeedForward, RMSNorm, rotary_table
from .mla import MLA
from .moe import MoE, update_bias


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """Sum of two optional losses."""
    return b if a is None else a if b is None else a + b


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, moe: bool):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = MLA(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = MoE(cfg.dim, cfg.moe) if moe else FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, dim) -> (x, the MoE balance loss or None)."""
        x = x + self.attention(self.attention_norm(x), cos, sin)
        h = self.ffn_norm(x)
        if isinstance(self.feed_forward, MoE):
            out, aux = self.feed_forward(h)
            return x + out, aux
        return x + self.feed_forward(h), None


class MTPModule(nn.Module):
    """One depth of multi-token prediction (module docstring); its block is an MoE layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.enorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.hnorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.dim, cfg.dim, bias=False)
        self.block = Block(cfg, moe=True)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, h: Tensor, emb: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor | None]:
        """h, emb: (B, T', dim) -> (normed hidden (B, T', dim), balance loss or None)."""
        x = self.eh_proj(torch.cat([self.enorm(emb), self.hnorm(h)], dim=-1))
        x, aux = self.block(x, cos, sin)
        return self.norm(x), aux


class DeepSeekV3(nn.Module):
    def __init__(self, cfg: ModelConfig, init_weights: bool = True):
        """``init_weights=False`` skips the random init, for weights about to be loaded."""
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, moe=i >= cfg.moe.n_dense_layers) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.mtp = nn.ModuleList(MTPModule(cfg) for _ in range(cfg.mtp_depth))
        cos, sin = rotary_table(cfg.mla.qk_rope_head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if init_weights:
            self.reset_parameters()

    def moe_layers(self) -> list[MoE]:
        """The MoE FFNs in order: main-model layers, then the MTP modules' blocks."""
        return [m for m in self.modules() if isinstance(m, MoE)]

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's own signature
        """Casts leave the rotary tables and the balancing biases in float32."""
        super()._apply(fn, recurse)
        self.rope_cos, self.rope_sin = self.rope_cos.float(), self.rope_sin.float()
        for moe in self.moe_layers():
            moe.router.expert_bias = moe.router.expert_bias.float()
        return self

    def reset_parameters(self, seed: int | None = None) -> None:
        """N(0, 0.02), output projections of residual branches (attention, FFN, experts) scaled by
        1/sqrt(2 * n_layers); norms one; balancing biases zero."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        resid_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                else:
                    std = resid_std if name.endswith(("wo.weight", "w2.weight", "experts.w2")) else 0.02
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
            for moe in self.moe_layers():
                moe.router.expert_bias.zero_()

    def _rotary(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        cos, sin = self.rope_cos[positions].unsqueeze(-3), self.rope_sin[positions].unsqueeze(-3)
        if cos.dim() == 3:  # (1, T, r) -> (1, 1, T, r)
            cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
        return cos, sin

    def hidden(self, tokens: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """tokens (B, T) -> (final-normed hidden states (B, T, dim), summed balance loss or None)."""
        if positions is None:
            positions = torch.arange(tokens.size(1), device=tokens.device)
        cos, sin = self._rotary(positions)
        h, aux = self.tok_embeddings(tokens), None
        for block in self.layers:
            h, a = block(h, cos, sin)
            aux = _add(aux, a)
        return self.norm(h), aux

    def forward(self, tokens: Tensor, positions: Tensor | None = None) -> Tensor:
        """tokens: (B, T) int64; positions: (B, T) or (T,), default 0..T-1. Returns the main
        model's logits (B, T, vocab) in float32."""
        return self.output(self.hidden(tokens, positions)[0]).float()

    def mtp_logits(self, h: Tensor, targets: Tensor) -> tuple[list[Tensor], Tensor | None]:
        """Logits of every MTP depth: module k gives (B, T - k, vocab), row i predicting
        ``targets[:, i + k]``. h: the main model's ``hidden`` (B, T, dim); targets (B, T)."""
        T, out, aux = targets.size(1), [], None
        for k, module in enumerate(self.mtp, start=1):
            cos, sin = self._rotary(torch.arange(k, T, device=targets.device))
            h, a = module(h[:, :T - k], self.tok_embeddings(targets[:, k - 1:T - 1]), cos, sin)
            out.append(self.output(h).float())
            aux = _add(aux, a)
        return out, aux

    def loss(self, tokens: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """tokens, targets: (B, T) (targets = tokens shifted by one). Returns (the loss to
        minimise, its detached parts: ``lm`` (next-token cross-entropy), ``mtp`` (mean over
        depths), ``balance`` (weighted sequence balance loss))."""
        h, aux = self.hidden(tokens)
        lm = F.cross_entropy(self.output(h).float().flatten(0, 1), targets.reshape(-1))
        total, parts = lm, {"lm": lm.detach()}
        if self.mtp:
            if targets.size(1) <= len(self.mtp):
                raise ValueError(f"sequences of {targets.size(1)} tokens are too short for MTP depth {len(self.mtp)}")
            logits, mtp_aux = self.mtp_logits(h, targets)
            mtp = torch.stack([F.cross_entropy(lg.flatten(0, 1), targets[:, k:].reshape(-1))
                               for k, lg in enumerate(logits, start=1)]).mean()
            total = total + self.cfg.mtp_loss_weight * mtp
            parts["mtp"] = mtp.detach()
            aux = _add(aux, mtp_aux)
        if aux is not None:
            total = total + aux
            parts["balance"] = aux.detach()
        return total, parts

    # ----- auxiliary-loss-free balancing ------------------------------------------------------
    def expert_loads(self) -> Tensor:
        """(MoE layers, routed experts) int64: tokens each expert received in the training
        forwards since the last ``update_bias``, this process only."""
        return torch.stack([m.step_loads for m in self.moe_layers()])

    def last_expert_loads(self) -> Tensor:
        """(MoE layers, routed experts) int64: tokens each expert received in the last forward."""
        return torch.stack([m.last_loads for m in self.moe_layers()])

    def expert_biases(self) -> Tensor:
        """(MoE layers, routed experts) float32: the balancing biases."""
        return torch.stack([m.router.expert_bias for m in self.moe_layers()])

    @torch.no_grad()
    def update_bias(self, loads: Tensor) -> None:
        """Move every layer's bias from ``loads`` (MoE layers, experts): the counts since the last
        update summed over every replica (``moe.update_bias``); then clear the counts."""
        for moe, layer_loads in zip(self.moe_layers(), loads, strict=True):
            update_bias(moe.router.expert_bias, layer_loads, moe.cfg.bias_update_speed)
            moe.step_loads.zero_()
