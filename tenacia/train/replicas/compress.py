"""Compression of the outer exchange: int8 / 4-bit codes with a scale per block, optional top-k, error feedback.

Pure torch on whatever device the tensor lives on (CPU or any accelerator): no CUDA-only kernel,
and no fallback: the format asked for is the format sent.

A tensor of ``n`` float32 values is cut into blocks of ``block`` elements (the last one padded
with zeros). Per block:
- top-k (``topk`` > 0): keep the ``k = max(1, round(topk x block))`` largest magnitudes and their
  positions in the block (uint8 for blocks of at most 256, int16 up to 32768, int32 above), drop
  the rest;
- quantize what is kept: ``scale = absmax / qmax`` (qmax 127 for int8, 7 for int4), symmetric,
  ``code = round(value / scale)`` (round half to even), dequantized as ``code x scale``; a block of
  zeros has scale 0 and codes 0. int4 codes are stored two to a byte (``code + 8`` in a nibble).
  ``fp32`` sends the kept values as they are.
- error feedback: ``encode(x, residual)`` compresses ``x + residual`` and returns the new residual
  ``(x + residual) - decode(payload)``, what was not sent; the caller keeps it for its next round
  (only once the round commits: a discarded round's exchange never happened).

Bytes per round (``Payload.nbytes``), n values: fp32 ``4n``; int8 ``n + 4n/block``; int4 ``n/2 +
4n/block``; with top-k f, ``f n (code + index bytes) + 4n/block`` (an index is one byte at
the default block of 256).

The payload is what goes over the wire (``pack``/``unpack``: one flat uint8 tensor whose size
depends only on ``n`` and the settings, the same on every replica). Codes cannot be summed by an
all-reduce (int8 values overflow and carry different scales), so the exchange is an all-gather of
the packed payloads and each replica dequantizes and sums them itself, in rank order (the same
bits on every replica). That costs each replica ``R - 1`` compressed payloads received per round
(``R`` replicas), against about two fp32 copies of the tensor for a ring all-reduce: a
reduce-scatter of dequantized partial sums followed by an all-gather of re-quantized ones would
cut it to about two compressed copies. The collective is a seam (``Gather`` in ``diloco.py``) that
a transport for long links can replace.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

QMAX = {"int8": 127, "int4": 7}


@dataclass(frozen=True, slots=True)
class Payload:
    """One compressed tensor: ``codes`` (int8, or uint8 nibble pairs for int4, or float32 for
    fp32), ``scales`` (float32, one per block; empty for fp32), ``indices`` (positions in each
    block of the kept values; None without top-k), ``numel`` of the original tensor."""

    codes: torch.Tensor
    scales: torch.Tensor
    indices: torch.Tensor | None
    numel: int

    @property
    def nbytes(self) -> int:
        parts = (self.codes, self.scales, *(() if self.indices is None else (self.indices,)))
        return sum(t.numel() * t.element_size() for t in parts)


class Compressor:
    """Encodes tensors in one format (module docstring); holds no state."""

    def __init__(self, quantize: str, block: int, topk: float, error_feedback: bool):
        if quantize not in ("fp32", *QMAX):
            raise ValueError(f"quantize must be one of 'fp32', 'int8', 'int4', not {quantize!r}")
        self.quantize, self.block, self.topk, self.error_feedback = quantize, block, topk, error_feedback

    @property
    def lossless(self) -> bool:
        return self.quantize == "fp32" and not self.topk

    def kept(self) -> int:
        """Values kept per block."""
        return max(1, round(self.topk * self.block)) if self.topk else self.block

    def index_dtype(self) -> torch.dtype:
        """The narrowest type that holds a position in a block."""
        return torch.uint8 if self.block <= 2 ** 8 else torch.int16 if self.block <= 2 ** 15 else torch.int32

    def encode(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> tuple[Payload, torch.Tensor | None]:
        """Compress float32 ``x`` (plus ``residual`` with error feedback); returns the payload and
        the residual to carry (None without error feedback)."""
        x = x.reshape(-1).float()
        if self.error_feedback and residual is not None:
            x = x + residual
        payload = self._encode(x)
        return payload, (x - self.decode(payload)) if self.error_feedback else None

    def _encode(self, x: torch.Tensor) -> Payload:
        n, b = x.numel(), self.block
        blocks = torch.nn.functional.pad(x, (0, -n % b)).view(-1, b)  # (n_blocks, block)
        indices = None
        if self.topk:
            indices = blocks.abs().topk(self.kept(), dim=1, sorted=False).indices.sort(dim=1).values
            blocks = blocks.gather(1, indices)  # (n_blocks, k)
            indices = indices.to(self.index_dtype())
        if self.quantize == "fp32":
            return Payload(blocks.reshape(-1).clone(), torch.empty(0), indices, n)
        qmax = QMAX[self.quantize]
        scales = blocks.abs().amax(dim=1) / qmax  # (n_blocks,)
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        codes = torch.round(blocks / safe[:, None]).clamp_(-qmax, qmax).to(torch.int8).reshape(-1)
        if self.quantize == "int4":
            codes = pack_nibbles(codes)
        return Payload(codes, scales, indices, n)

    def decode(self, p: Payload) -> torch.Tensor:
        """The float32 tensor ``p`` stands for (zeros where top-k dropped a value)."""
        b = self.block
        n_blocks = -(-p.numel // b)
        width = self.kept() if self.topk else b
        if self.quantize == "fp32":
            values = p.codes.view(n_blocks, width)
        else:
            codes = unpack_nibbles(p.codes, n_blocks * width) if self.quantize == "int4" else p.codes
            values = codes.view(n_blocks, width).float() * p.scales[:, None]
        if p.indices is not None:
            values = torch.zeros(n_blocks, b, dtype=torch.float32, device=values.device).scatter_(
                1, p.indices.long().view(n_blocks, width), values)
        return values.reshape(-1)[:p.numel]

    # ----- the wire form: one uint8 tensor per payload --------------------------------------------------
    def layout(self, n: int) -> list[tuple[str, torch.dtype, int]]:
        """(part, dtype, element count) of a packed payload of ``n`` values, in order."""
        n_blocks = -(-n // self.block)
        width = self.kept() if self.topk else self.block
        values = n_blocks * width
        code = {"fp32": (torch.float32, values), "int8": (torch.int8, values),
                "int4": (torch.uint8, (values + 1) // 2)}[self.quantize]
        parts = [("codes", *code), ("scales", torch.float32, 0 if self.quantize == "fp32" else n_blocks)]
        if self.topk:
            parts.append(("indices", self.index_dtype(), values))
        return parts

    def packed_bytes(self, n: int) -> int:
        return sum(count * torch.empty(0, dtype=dt).element_size() for _, dt, count in self.layout(n))

    def pack(self, p: Payload) -> torch.Tensor:
        parts = {"codes": p.codes, "scales": p.scales, "indices": p.indices}
        return torch.cat([parts[name].reshape(-1).view(torch.uint8) for name, _, _ in self.layout(p.numel)])

    def unpack(self, buf: torch.Tensor, n: int) -> Payload:
        parts, offset = {}, 0
        for name, dt, count in self.layout(n):
            size = count * torch.empty(0, dtype=dt).element_size()
            parts[name] = buf[offset:offset + size].clone().view(dt)  # a copy: the view needs its own alignment
            offset += size
        return Payload(parts["codes"], parts["scales"], parts.get("indices"), n)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-7, 7] -> uint8, two per byte (first in the low nibble), as ``code + 8``."""
    u = (codes.to(torch.int16) + 8).to(torch.uint8)
    u = torch.nn.functional.pad(u, (0, u.numel() % 2))
    return u[0::2] | (u[1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """``pack_nibbles`` reversed: ``n`` int8 codes."""
    low, high = (packed & 0xF).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=1).reshape(-1)[:n]
