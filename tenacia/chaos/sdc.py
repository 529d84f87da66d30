"""Wrong numbers (silent data corruption), injected in-process at the tamper sites of ``tenacia.hooks``.

Each ``sdc:SLOT@S:SITE:BITS[:WHEN]`` entry of the schedule (``tenacia.faults``) becomes a tamperer
in the process that runs on device slot SLOT; each ``lr_spike@S:F`` one in every process. Contract:
- one firing corrupts exactly one element: of a tensor in place (through ``.data`` under
  ``no_grad``, so autograd never sees it and a backward that saved the tensor still runs, on the
  wrong number); of a list of tensors, one element drawn over all of them in list order; of a
  float, its float32 representation (the new float is returned); of a vote, one numeric leaf of a
  copy (a float as float32, an int as int64; bools are flags, not numbers, and are left alone);
- which element, which bits, and whether an intermittent fault fires come from a
  ``random.Random`` seeded through SHA-256 by (chaos seed, slot, step, site, call number at that
  site and step, the entry's spec): the same config corrupts the same numbers on every machine;
- ``once`` fires at the first call at a step >= S that has a number to corrupt, then never again;
  ``every`` at every call from S on, re-executions included, and the same way at every call of a
  step (its generator ignores the call number): a chip that computes a wrong number computes the
  same wrong number when asked again, which is how a re-execution tells it from a transient fault;
  ``q=P`` at each call from S on with probability P;
- every injection is reported as ``emit("fault_injected", ...)`` (fields in docs/events.md;
  NaN and infinities as the strings ``"nan"``, ``"inf"``, ``"-inf"``); nothing goes to stdout.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from .. import hooks
from ..faults import ChaosConfig, LrSpike, NumericFault, numeric_faults

Emit = Callable[..., Any]  # emit(event_name, **fields), e.g. EventLog.emit
_NAN32, _INF32, _SIGN32 = 0x7FC00000, 0x7F800000, 0x80000000


@dataclass(frozen=True, slots=True)
class Flip:
    """One corrupted element: where, its value before and after, the bit positions that differ."""

    index: int | str  # flat index over the value's elements (list order), or a vote leaf's path
    old: float | int
    new: float | int
    bits: tuple[int, ...]


def rng_for(seed: int, slot: int, step: int, site: str, call: int, spec: str) -> random.Random:
    """The generator of one call: a stable function of its arguments (no salted ``hash()``)."""
    key = repr((seed, slot, step, site, call, spec)).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def positions(bits: str, rng: random.Random, width: int = 32) -> tuple[int, ...]:
    """Bit positions a flip of class ``bits`` changes in a ``width``-bit word (``sign``: the top
    bit; ``exponent``: the one below it, float32's top exponent bit)."""
    if bits == "sign":
        return (width - 1,)
    if bits == "exponent":
        return (width - 2,)
    if bits == "mantissa_high":
        return (rng.randint(18, 22),)
    if bits == "mantissa_low":
        return (rng.randint(0, 4),)
    if bits == "multi":
        return tuple(sorted(rng.sample(range(width), 3)))
    raise ValueError(f"{bits!r} flips no chosen bits")


def corrupt_word(old: int, bits: str, rng: random.Random) -> int:
    """The new bit pattern (unsigned) of a float32 whose pattern is ``old``."""
    if bits == "zero":
        return 0
    if bits == "nan":
        return _NAN32
    if bits == "inf":
        return _INF32 | (old & _SIGN32)  # keeps the sign
    mask = sum(1 << b for b in positions(bits, rng))
    return old ^ mask


def _as_float32(word: int) -> float:
    return struct.unpack("<f", struct.pack("<I", word))[0]


def _differ(old: int, new: int) -> tuple[int, ...]:
    return tuple(b for b in range(64) if (old ^ new) >> b & 1)


def flip(tensor: torch.Tensor, index: int, bits: str, rng: random.Random) -> Flip:
    """Corrupt element ``index`` (flat, row-major) of float32 ``tensor`` in place, unseen by autograd."""
    if tensor.dtype != torch.float32:
        raise TypeError(f"wrong numbers are injected into float32 tensors, not {tensor.dtype}")
    if not 0 <= index < tensor.numel():
        raise IndexError(f"element {index} of a tensor of {tensor.numel()}")
    at = tuple(int(i) for i in torch.unravel_index(torch.tensor(index), tensor.shape))  # any strides
    with torch.no_grad():
        words = tensor.data.view(torch.int32)
        old = int(words[at]) & 0xFFFFFFFF
        new = corrupt_word(old, bits, rng)
        words[at] = new - (1 << 32) if new >> 31 else new
    return Flip(index, _as_float32(old), _as_float32(new), _differ(old, new))


def flip_float(value: float, bits: str, rng: random.Random) -> tuple[float, Flip]:
    """``value`` as float32, corrupted; the new float and the record."""
    t = torch.tensor([value], dtype=torch.float32)
    rec = flip(t, 0, bits, rng)
    return float(t[0]), rec


def flip_int(value: int, bits: str, rng: random.Random) -> tuple[float | int, Flip]:
    """``value`` as an int64 (unsigned when it only fits so), corrupted; ``nan``/``inf`` give floats."""
    if bits in ("nan", "inf"):
        new: float | int = math.nan if bits == "nan" else math.copysign(math.inf, value)
        return new, Flip(0, value, new, ())
    word = value & (2**64 - 1)
    new_word = 0 if bits == "zero" else word ^ sum(1 << b for b in positions(bits, rng, 64))
    new = new_word - 2**64 if new_word >> 63 and value < 2**63 else new_word
    return new, Flip(0, value, new, _differ(word, new_word))


def _numeric_leaves(obj: Any, path: str = "") -> list[tuple[Any, Any, str]]:
    """(container, key, path) of every float or int (not bool) in nested dicts and lists, in order."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    out = []
    for key, v in items:
        where = f"{path}.{key}" if isinstance(obj, dict) else f"{path}[{key}]"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((obj, key, where.lstrip(".")))
        else:
            out.extend(_numeric_leaves(v, where))
    return out


def corrupt(value: Any, bits: str, rng: random.Random) -> tuple[Any, Flip | None]:
    """The value to use at a tamper site after one corruption, and its record (None when the value
    holds no number: an empty tensor, a vote without numeric leaves)."""
    if isinstance(value, torch.Tensor):
        return value, flip(value, rng.randrange(value.numel()), bits, rng) if value.numel() else None
    if isinstance(value, (list, tuple)):  # params, moments
        total = sum(t.numel() for t in value)
        if not total:
            return value, None
        index, offset = rng.randrange(total), 0
        for t in value:
            if index < offset + t.numel():
                rec = flip(t, index - offset, bits, rng)
                return value, replace(rec, index=index)
            offset += t.numel()
    if isinstance(value, float):
        return flip_float(value, bits, rng)
    if isinstance(value, dict):  # vote
        value = copy.deepcopy(value)
        leaves = _numeric_leaves(value)
        if not leaves:
            return value, None
        box, key, path = leaves[rng.randrange(len(leaves))]
        old = box[key]
        box[key], rec = flip_float(old, bits, rng) if isinstance(old, float) else flip_int(old, bits, rng)
        return value, replace(rec, index=path)
    raise TypeError(f"no wrong number can be injected into a {type(value).__name__}")


def _json(x: float | int) -> float | int | str:
    """A number the event log can hold in strict JSON (non-finite floats as strings)."""
    return x if isinstance(x, int) or math.isfinite(x) else str(x)


def _sdc(f: NumericFault, seed: int, emit: Emit) -> hooks.Tamperer:
    calls: dict[int, int] = {}  # step -> calls at this site so far
    fired = False

    def tamper(site: str, step: int, value: Any) -> Any:
        nonlocal fired
        if site != f.site or step < f.step or (f.when == "once" and fired):
            return value
        call = calls[step] = calls.get(step, -1) + 1
        rng = rng_for(seed, f.slot, step, site, 0 if f.when == "every" else call, f.spec)
        if f.when == "q" and rng.random() >= f.q:
            return value
        value, rec = corrupt(value, f.bits, rng)
        if rec is not None:
            fired = True
            emit("fault_injected", step=step, kind="sdc", spec=f.spec, site=site, bits=f.bits, when=f.when,
                 q=f.q, slot=f.slot, call=call, index=rec.index, old=_json(rec.old), new=_json(rec.new),
                 flipped=list(rec.bits))
        return value

    return tamper


def _lr_spike(f: LrSpike, slot: int, emit: Emit) -> hooks.Tamperer:
    def tamper(site: str, step: int, value: Any) -> Any:
        if site != "lr" or step != f.step:
            return value
        new = value * f.factor
        emit("fault_injected", step=step, kind="lr_spike", spec=f.spec, site=site, slot=slot, factor=f.factor,
             old=_json(value), new=_json(new))
        return new

    return tamper


def install(chaos: ChaosConfig, slot: int, emit: Emit) -> Callable[[], None]:
    """Tamper, in this process (on device slot ``slot``), as the schedule's wrong numbers for that
    slot and its lr spikes say; returns the function that stops it all."""
    stops = []
    for f in numeric_faults(chaos):
        if isinstance(f, LrSpike):
            stops.append(hooks.tamper_with(_lr_spike(f, slot, emit)))
        elif f.slot == slot:
            stops.append(hooks.tamper_with(_sdc(f, chaos.seed, emit)))

    def stop() -> None:
        for s in stops:
            s()

    return stop
