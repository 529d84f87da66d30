"""The serving layout of a Llama: the same weights, arranged for fast inference, and one forward.

Training wants one ``nn.Linear`` per projection and (batch, time) tensors; serving wants fewer,
larger matrix products, no autograd bookkeeping, and rows of tokens. ``PackedLlama`` takes a
trained ``Llama`` and a backend (``backend.py``, chosen once by the engine) and keeps:

- q, k and v as one fused projection (five matrix products a layer instead of seven), with
  their biases fused the same way when the model has them (Qwen2); a bias-free model passes
  ``None`` and runs no bias op;
- every projection as the backend's product (``backend.linear``): on a CPU in float32 the
  implementation timed fastest on this CPU for a decode step and for a prefill
  (``cpu/products.py``); elsewhere ``F.linear``;
- gate and up as two products, and, where the backend fuses them for a decode step
  (``fuse_gate_up``), also as one: for long prompts one fused product is slower (its output no
  longer fits in cache; docs/serving.md, "Recorded observations").

One forward (``hidden``) serves a decode step (one token per sequence, ``decode=True``) and a
prefill (the prompts' tokens packed into one row): embedding, then per layer RMSNorm, the fused
q/k/v product, rotary on q and k in place, attention through the ``AttentionCache``
(``attention.PagedAttention``), the output product, RMSNorm and the gated MLP; each layer
returns its output ("delta"), added to the residual stream by the next layer's fused add+norm.
Where the backend has one (the CPU kernels, ``cpu/decode_stack.py``) and it is timed the faster
at start (``cpu/decode_path.py``), a decode step's layers run instead in one call that does the
same per layer.

The original module's projection weights are not referenced afterwards: drop the ``Llama`` to
free them. Numerics: the same math in the same dtype as ``Llama.forward`` (norms and rotary in
float32); logits differ only by float32 summation order (~1e-5), so greedy tokens match it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...model.llama import AttentionCache, Llama
from .backend import TorchBackend


class PackedBlock:
    """One transformer layer in the serving layout (module docstring)."""

    def __init__(self, block, layer: int, backend: TorchBackend):
        a, f = block.attention, block.feed_forward
        self.layer, self.backend = layer, backend
        self.n_heads, self.n_kv_heads, self.head_dim = a.n_heads, a.n_kv_heads, a.head_dim
        self.q_size, self.kv_size = a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim
        self.attn_norm = block.attention_norm.weight.detach()
        self.ffn_norm = block.ffn_norm.weight.detach()
        self.eps = block.attention_norm.eps
        qkv_bias = torch.cat([a.wq.bias, a.wk.bias, a.wv.bias]) if a.wq.bias is not None else None
        self.qkv = backend.linear(torch.cat([a.wq.weight, a.wk.weight, a.wv.weight]), qkv_bias)
        self.wo = backend.linear(a.wo.weight)
        fused = backend.fuse_gate_up
        self.gate_up = backend.linear(torch.cat([f.w1.weight, f.w3.weight]), runs_in="decode") if fused else None
        self.gate = backend.linear(f.w1.weight, runs_in="prefill" if fused else "both")
        self.up = backend.linear(f.w3.weight, runs_in="prefill" if fused else "both")
        self.down = backend.linear(f.w2.weight)

    def __call__(self, x: Tensor, delta: Tensor | None, cos: Tensor, sin: Tensor, cache: AttentionCache,
                 decode: bool, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (rows, dim), the residual stream before this layer, still missing ``delta`` (the
        previous layer's output; None for the first layer), which is added in place here; rows
        are one token per sequence (``decode``) or a prefill's prompt tokens packed into one row;
        cos, sin: (rows, hd). Returns (the residual stream, this layer's own delta); the caller
        adds the last delta. ``keep`` (row indices): after the attention (which stores every
        row's key and value), only these rows go on, and the stream returned is theirs alone."""
        b, rows, hd = self.backend, x.size(0), self.head_dim
        q_size, kv_end = self.q_size, self.q_size + self.kv_size
        qkv = self.qkv(b.add_rms_norm(x, delta, self.attn_norm, self.eps))  # (rows, q + 2 kv)
        b.rotary_(qkv, self.n_heads + self.n_kv_heads, hd, cos, sin)  # q and k, in place
        q, k, v = qkv[:, :q_size], qkv[:, q_size:kv_end], qkv[:, kv_end:]
        if decode:  # (B, heads, 1, hd): one token per sequence
            q, k, v = q.view(rows, -1, 1, hd), k.view(rows, -1, 1, hd), v.view(rows, -1, 1, hd)
        else:  # (1, heads, N, hd): the prompt tokens packed into one row
            q, k, v = (t.view(1, rows, -1, hd).transpose(1, 2) for t in (q, k, v))
        out = cache.attend(self.layer, q, k, v).transpose(1, 2).reshape(rows, q_size)
        if keep is not None:
            x, out = x[keep], out[keep]  # copies: x's other rows are never read again
        h = b.add_rms_norm(x, self.wo(out), self.ffn_norm, self.eps)
        if decode and self.gate_up is not None:
            return x, self.down(b.silu_mul(self.gate_up(h)))
        return x, self.down(b.silu_mul_pair(self.gate(h), self.up(h)))


class PackedLlama:
    """Inference-only view of a ``Llama`` (see module docstring). Call under ``inference_mode``."""

    def __init__(self, model: Llama, backend: TorchBackend):
        self.cfg, self.backend = model.cfg, backend
        self.embeddings = model.tok_embeddings.weight.detach()
        self.rope_cos, self.rope_sin = model.rope_cos, model.rope_sin
        self.layers = [PackedBlock(b, i, backend) for i, b in enumerate(model.layers)]
        self.norm = model.norm.weight.detach()
        self.eps = model.norm.eps
        # the output projection runs on each sequence's last token only: decode-sized
        self.output = backend.linear(model.output.weight, runs_in="decode")
        self.dtype = self.embeddings.dtype
        # a decode step's layers in one call, where the backend has one and it is the faster
        # (cpu/decode_stack.py, cpu/decode_path.py)
        self.decode_stack = None
        backend.arrange_decode(self)
        backend.arrange_prefill(self)  # after the decode's way: it may have freed the kernels' panels

    def hidden(self, tokens: Tensor, positions: Tensor, cache: AttentionCache, decode: bool,
               keep: Tensor | None = None) -> Tensor:
        """tokens, positions: (rows,) -> last hidden states (rows, dim), before the final norm.
        ``decode``: one token per sequence; else a prefill's tokens packed into one row.
        ``keep`` (row indices, a prefill's rows to be sampled): only those rows' hidden states,
        (len(keep), dim); the last layer then runs its output product and MLP on them alone
        (every row's key and value still reach the cache): for a 100-token prompt, 99 rows of
        the last layer's wo, gate/up and down (about 3% of the prefill's arithmetic) are never
        used."""
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # (rows, hd)
        x = F.embedding(tokens, self.embeddings)  # (rows, dim), a new tensor: updated in place below
        if decode and self.decode_stack is not None:
            return self.decode_stack(x, cos, sin, *cache.decode_rows())
        delta, last = None, len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x, delta = layer(x, delta, cos, sin, cache, decode, keep if i == last else None)
        return x.add_(delta)

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden: (S, dim) -> float32 logits (S, vocab)."""
        return self.output(self.backend.add_rms_norm(hidden.contiguous(), None, self.norm, self.eps)).float()
