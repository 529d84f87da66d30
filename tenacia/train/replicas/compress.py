"""Compression of the outer exchange: int8 / 4-bit / 2-bit codes with a scale per block, optional top-k, error feedback.

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
  ``int2``: four levels ``{-3, -1, 1, 3} x scale`` with ``scale = rms / 2`` (the block's root mean
  square), each value to the nearest level (``level = 2 floor(value / (2 scale)) + 1``, clamped to
  [-3, 3]: a value on a boundary, 0 or +-2 scale, goes to the level above), stored four to a
  byte as ``(level + 3) / 2``, the first in the lowest two bits; a block of zeros has scale 0.
  Why this code and not ``-1..1`` with an absmax scale: for a Gaussian block the levels are
  ``+-0.5 sigma, +-1.5 sigma``, next to the 4-level Lloyd-Max quantizer's ``+-0.45, +-1.51`` (its
  error 11.75% of the block's energy); an absmax scale puts nearly every value of a dense block
  on 0 (three levels) or on the two inner levels (four), several times the error
  (``tests/train/replicas/test_compress.py`` checks int2's on Gaussian and Laplace blocks against
  absmax ternary's). A value beyond the outer level (past 2 rms) is clamped; error feedback carries
  the rest to the next rounds. The code has no zero: a value of 0 in a block that is not all zeros
  is sent as +scale (error feedback again).
  ``fp32`` sends the kept values as they are.
- error feedback: ``encode(x, residual)`` compresses ``x + residual`` and returns the new residual
  ``(x + residual) - decode(payload)``, what was not sent; the caller keeps it for its next round
  (only once the round commits: a discarded round's exchange never happened).

Bytes per round (``Payload.nbytes``), n values: fp32 ``4n``; int8 ``n + 4n/block``; int4 ``n/2 +
4n/block``; int2 ``n/4 + 4n/block``; with top-k f, ``f n (code + index bytes) + 4n/block`` (an index is one byte at
the default block of 256).

The payload is what goes over the wire (``pack``/``unpack``: one flat uint8 tensor whose size
depends only on ``n`` and the settings, the same on every replica). Codes cannot be summed by an
all-reduce (int8 values overflow and carry different scales): ``compressed_reduce.py`` exchanges
them (an all-gather of the payloads, or a reduce-scatter of compressed chunks whose sums are
re-quantized and all-gathered).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import QUANTIZE

BITS = {"int8": 8, "int4": 4, "int2": 2}  # bits a code
QMAX = {"int8": 127, "int4": 7}  # the largest code of the absmax formats


@dataclass(frozen=True, slots=True)
class Payload:
    """One compressed tensor: ``codes`` (int8, or uint8 holding two int4 or four int2 codes a
    byte, or float32 for fp32), ``scales`` (float32, one per block; empty for fp32), ``indices`` (positions in each
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
        if quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {', '.join(map(repr, QUANTIZE))}, not {quantize!r}")
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
        if self.quantize == "int2":
            scales = blocks.pow(2).mean(dim=1).sqrt() / 2  # (n_blocks,)
            safe = torch.where(scales > 0, scales, torch.ones_like(scales))
            levels = (2 * torch.floor(blocks / (2 * safe[:, None])) + 1).clamp_(-3, 3)  # -3, -1, 1, 3
            return Payload(pack_codes(((levels + 3) / 2).to(torch.uint8).reshape(-1), 2), scales, indices, n)
        qmax = QMAX[self.quantize]
        scales = blocks.abs().amax(dim=1) / qmax  # (n_blocks,)
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        codes = torch.round(blocks / safe[:, None]).clamp_(-qmax, qmax).to(torch.int8).reshape(-1)
        if self.quantize == "int4":
            codes = pack_codes((codes + 8).to(torch.uint8), 4)
        return Payload(codes, scales, indices, n)

    def decode(self, p: Payload) -> torch.Tensor:
        """The float32 tensor ``p`` stands for (zeros where top-k dropped a value)."""
        b = self.block
        n_blocks = -(-p.numel // b)
        width = self.kept() if self.topk else b
        if self.quantize == "fp32":
            values = p.codes.view(n_blocks, width)
        else:
            codes = p.codes
            if self.quantize == "int4":
                codes = unpack_codes(codes, 4, n_blocks * width).to(torch.int8) - 8
            elif self.quantize == "int2":
                codes = 2 * unpack_codes(codes, 2, n_blocks * width).to(torch.int8) - 3  # the levels
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
        if self.quantize in ("fp32", "int8"):
            code = (torch.float32 if self.quantize == "fp32" else torch.int8, values)
        else:  # several codes a byte
            code = (torch.uint8, -(-values * BITS[self.quantize] // 8))
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


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes below ``2 ** bits`` (4 or 2) -> uint8, ``8 // bits`` a byte, the first in the lowest bits."""
    per = 8 // bits
    u = torch.nn.functional.pad(codes, (0, -codes.numel() % per)).view(-1, per)
    packed = u[:, 0].clone()
    for i in range(1, per):
        packed |= u[:, i] << (bits * i)
    return packed


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """``pack_codes`` reversed: the first ``n`` codes (uint8)."""
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    return ((packed[:, None] >> shifts) & (2 ** bits - 1)).reshape(-1)[:n]
